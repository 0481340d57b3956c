"""Weight initialisation that keeps each tower's own rules when a checkpoint lacks some weights.

Every hf_mm `_init_weights` writes through transformers' guarded functions (`transformers.initialization`), which
leave a weight alone once a checkpoint filled it. transformers cannot know that of a class defined outside its
package, so for such "custom code" it takes a shortcut when it initialises the weights a checkpoint lacks: it skips
every module that has no parameters of its own. In a composite that holds native towers, that skips the towers'
own rules (CLIP initialises `q_proj` from its parent `CLIPAttention`), and a missing tower weight got the generic
N(0, 0.02) instead. Declaring the guarded contract restores each tower's own law. Remote-code exports keep the
shortcut, as transformers intends for code it cannot vouch for.
"""


class GuardedInitMixin:
    """For hf_mm's PreTrainedModel classes, whose `_init_weights` use only `transformers.initialization`."""

    @classmethod
    def is_custom_code(cls) -> bool:
        return cls.is_remote_code()


__all__ = ["GuardedInitMixin"]
