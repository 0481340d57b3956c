"""`hf-mm` command line.

hf-mm sft --config recipes/llava15_instruct.yaml [--field value ...]   supervised fine-tuning (TRL SFTTrainer)
hf-mm dpo --config recipes/dpo.yaml [--field value ...]                preference tuning (TRL DPOTrainer)
hf-mm contrastive --config recipes/clip_digits.yaml                     CLIP / SigLIP training
hf-mm qformer --config recipes/blip2_stage1.yaml                        BLIP-2 stage 1 (ITC + ITM + ITG)
hf-mm demo [--quick]                                                   the learning demo (align, then instruct)
hf-mm convert llava|blip2|clip|siglip|qwen2_5_vl SRC DST              import a transformers checkpoint
"""

import argparse
import sys

CONVERTERS = ("llava", "blip2", "clip", "siglip", "qwen2_5_vl")


def _convert(args: argparse.Namespace) -> None:
    from . import convert

    model, processor = getattr(convert, f"from_transformers_{args.family}")(args.src)
    model.save_pretrained(args.dst)
    if processor is not None:
        processor.save_pretrained(args.dst)
    print(f"Converted {args.family} checkpoint {args.src} -> {args.dst} ({model.num_parameters():,} parameters).")


def _recipe(command: str, argv: list[str]) -> None:
    # The recipes own their arguments (TrlParser: a YAML config, every field overridable on the command line).
    if command == "sft":
        from .training.sft import main
    elif command == "dpo":
        from .training.dpo import main
    elif command == "contrastive":
        from .training.contrastive import main
    elif command == "qformer":
        from .training.qformer import main
    elif argv[:1] == ["clip"]:
        from .demo_clip import main

        argv = argv[1:]
    else:
        from .demo import main
    main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("sft", "dpo", "contrastive", "qformer", "demo"):
        return _recipe(argv[0], argv[1:])
    parser = argparse.ArgumentParser(prog="hf-mm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    recipes = (
        ("sft", "supervised fine-tuning"),
        ("dpo", "preference tuning"),
        ("contrastive", "CLIP training"),
        ("qformer", "BLIP-2 stage-1 Q-Former training"),
    )
    for name, text in (*recipes, ("demo", "learning demos")):
        commands.add_parser(name, help=f"{text}; see `hf-mm {name} --help`")
    convert = commands.add_parser("convert", help="import a checkpoint from another library into hf_mm")
    convert.add_argument("family", choices=CONVERTERS)
    convert.add_argument("src", help="a local folder or Hub id of the source checkpoint")
    convert.add_argument("dst", help="the folder to save the hf_mm checkpoint and processor to")
    convert.set_defaults(func=_convert)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
