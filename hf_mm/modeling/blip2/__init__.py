from .masks import MODES, qformer_attention_mask

__all__ = ["MODES", "qformer_attention_mask"]
