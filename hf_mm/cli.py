"""`hf-mm` command line. `hf-mm convert llava SRC DST` imports a transformers Llava checkpoint into hf_mm."""

import argparse

CONVERTERS = ("llava",)


def _convert(args: argparse.Namespace) -> None:
    from .convert import from_transformers_llava

    model, processor = from_transformers_llava(args.src)
    model.save_pretrained(args.dst)
    if processor is not None:
        processor.save_pretrained(args.dst)
    print(f"Converted {args.family} checkpoint {args.src} -> {args.dst} ({model.num_parameters():,} parameters).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hf-mm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="import a checkpoint from another library into hf_mm")
    convert.add_argument("family", choices=CONVERTERS)
    convert.add_argument("src", help="a local folder or Hub id of the source checkpoint")
    convert.add_argument("dst", help="the folder to save the hf_mm checkpoint and processor to")
    convert.set_defaults(func=_convert)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
