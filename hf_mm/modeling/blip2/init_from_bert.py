"""Start a stage-1 Q-Former from a BERT checkpoint, as BLIP-2 does (next to the Q-Former, not an importer: it
initialises a *new* model from BERT's weights)."""

from transformers import AutoModelForMaskedLM, Blip2QFormerConfig


def qformer_from_bert(bert_name_or_path: str, cross_attention_frequency: int = 2):
    """(Blip2QFormerConfig, state dict) to start a stage-1 Q-Former from a BERT checkpoint, as BLIP-2 does.

    BERT's self-attention and feed-forward layers initialise both the text and the query feed-forward paths (LAVIS
    copies them the same way), its embeddings the Q-Former's text embeddings and input LayerNorm, and its MLM head
    (when the checkpoint has one) the ITG head. The cross-attention layers are new. Returned keys are named as in
    `HfMmBlip2ForImageTextRetrieval`; BERT's token-type embeddings and pooler have no counterpart and are left out.
    """
    bert = AutoModelForMaskedLM.from_pretrained(bert_name_or_path)
    if bert.config.model_type != "bert":
        raise ValueError(
            f"{bert_name_or_path!r} is a {bert.config.model_type!r} model; the Q-Former starts from BERT."
        )
    c = bert.config
    config = Blip2QFormerConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
        hidden_dropout_prob=c.hidden_dropout_prob, attention_probs_dropout_prob=c.attention_probs_dropout_prob,
        max_position_embeddings=c.max_position_embeddings, initializer_range=c.initializer_range,
        layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id, use_qformer_text_input=True,
        cross_attention_frequency=cross_attention_frequency,
    )  # fmt: skip
    state = {}
    for key, value in bert.state_dict().items():
        for new in _bert_key(key):
            state[new] = value
    return config, state


def _bert_key(key: str) -> list[str]:
    """The stage-1 names a BertForMaskedLM key initialises (none for the token types, pooler and tied decoder)."""
    fixed = {
        "bert.embeddings.word_embeddings.weight": "bridge.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight": "bridge.embeddings.position_embeddings.weight",
        "bert.embeddings.LayerNorm.weight": "bridge.qformer.layernorm.weight",
        "bert.embeddings.LayerNorm.bias": "bridge.qformer.layernorm.bias",
        "cls.predictions.transform.dense.weight": "itg_head.dense.weight",
        "cls.predictions.transform.dense.bias": "itg_head.dense.bias",
        "cls.predictions.transform.LayerNorm.weight": "itg_head.layernorm.weight",
        "cls.predictions.transform.LayerNorm.bias": "itg_head.layernorm.bias",
        "cls.predictions.bias": "itg_head.decoder.bias",
    }
    if key in fixed:
        return [fixed[key]]
    if not key.startswith("bert.encoder.layer."):
        return []
    name = "bridge.qformer.encoder.layer." + key[len("bert.encoder.layer.") :].replace(
        ".attention.self.", ".attention.attention."
    )
    for part in (".intermediate.", ".output."):
        if part in name and ".attention." not in name:  # the feed-forward: text path and query path
            return [name, name.replace(part, part.rstrip(".") + "_query.")]
    return [name]


__all__ = ["qformer_from_bert"]
