"""`hf-mm` command line.

hf-mm sft --config recipes/llava15_instruct.yaml [--field value ...]   supervised fine-tuning (TRL SFTTrainer)
hf-mm dpo --config recipes/dpo.yaml [--field value ...]                preference tuning (TRL DPOTrainer)
hf-mm grpo --config recipes/grpo_grounding.yaml [--field value ...]    RL with verifiable rewards (TRL GRPOTrainer)
hf-mm contrastive --config recipes/clip_digits.yaml                     CLIP / SigLIP training
hf-mm qformer --config recipes/blip2_stage1.yaml                        BLIP-2 stage 1 (ITC + ITM + ITG)
hf-mm demo [--quick]                                                   the learning demo (align, then instruct)
hf-mm convert llava|blip2|clip|siglip|qwen2_5_vl SRC DST              import a transformers checkpoint
hf-mm push OUTPUT_DIR REPO_ID [--private]                              upload model, processor and card, one commit
hf-mm export-remote-code DIR                                           make DIR loadable without hf_mm (remote code)
hf-mm export-transformers SRC DST                                      the exactly equivalent transformers checkpoint
hf-mm bench [--preset small|gpu|smoke]                                 hf_mm vs transformers (from a checkout)
hf-mm compare [--quick]                                                every bridge on the same towers and tasks
"""

import argparse
import os
import sys

from .families import importers

CONVERTERS = tuple(importers())  # every family's importers, from the registry


def _convert(args: argparse.Namespace) -> None:
    model, processor = importers()[args.family](args.src)
    model.save_pretrained(args.dst)
    if processor is not None:
        processor.save_pretrained(args.dst)
    print(f"Converted {args.family} checkpoint {args.src} -> {args.dst} ({model.num_parameters():,} parameters).")


def _push(args: argparse.Namespace) -> None:
    from . import hub

    commit = hub.push(args.output_dir, args.repo_id, private=args.private or None, revision=args.revision,
                      commit_message=args.commit_message, create_pr=args.create_pr, base_repo=args.base_repo)  # fmt: skip
    print(f"Pushed {args.output_dir} to {commit.commit_url}")


def _export_remote_code(args: argparse.Namespace) -> None:
    from .remote_code import export_remote_code

    written = export_remote_code(args.dir)
    print(f"Wrote {len(written)} module files and auto_map to {args.dir}: loadable with trust_remote_code=True.")


def _export_transformers(args: argparse.Namespace) -> None:
    from .export import NotExportable, export_transformers

    try:
        name = export_transformers(args.src, args.dst)
    except NotExportable as error:
        raise SystemExit(f"Not exported: {error}") from None
    print(f"Wrote {args.dst}: a {name} checkpoint that transformers loads without hf_mm.")


def _bench(argv: list[str]) -> None:
    # The harness lives in the repository's benchmarks/ (it is not part of the installed package).
    sys.path.insert(0, os.getcwd())
    try:
        from benchmarks.run import main as bench
    except ImportError as error:
        raise SystemExit(f"hf-mm bench runs from a checkout of hf_mm, where benchmarks/ lives ({error}).") from None
    bench(argv)


def _recipe(command: str, argv: list[str]) -> None:
    # The recipes own their arguments (TrlParser: a YAML config, every field overridable on the command line).
    if command == "sft":
        from .training.sft import main
    elif command == "dpo":
        from .training.dpo import main
    elif command == "grpo":
        from .training.grpo import main
    elif command == "contrastive":
        from .training.contrastive import main
    elif command == "qformer":
        from .training.qformer import main
    elif argv[:1] == ["clip"]:
        from .apps.demo_clip import main

        argv = argv[1:]
    else:
        from .apps.demo import main
    main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("sft", "dpo", "grpo", "contrastive", "qformer", "demo"):
        return _recipe(argv[0], argv[1:])
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    if argv and argv[0] == "compare":
        from .apps.compare import main as compare

        compare(argv[1:])
        return None
    parser = argparse.ArgumentParser(prog="hf-mm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    recipes = (
        ("sft", "supervised fine-tuning"),
        ("dpo", "preference tuning"),
        ("grpo", "RL with verifiable rewards (TRL GRPOTrainer)"),
        ("contrastive", "CLIP training"),
        ("qformer", "BLIP-2 stage-1 Q-Former training"),
    )
    for name, text in (
        *recipes,
        ("demo", "learning demos"),
        ("bench", "benchmarks against transformers"),
        ("compare", "every bridge on the same towers and tasks"),
    ):
        commands.add_parser(name, help=f"{text}; see `hf-mm {name} --help`")
    convert = commands.add_parser("convert", help="import a checkpoint from another library into hf_mm")
    convert.add_argument("family", choices=CONVERTERS)
    convert.add_argument("src", help="a local folder or Hub id of the source checkpoint")
    convert.add_argument("dst", help="the folder to save the hf_mm checkpoint and processor to")
    convert.set_defaults(func=_convert)
    push = commands.add_parser("push", help="upload a saved model (or adapter) with its processor and model card")
    push.add_argument("output_dir", help="the saved folder (a training run's output_dir)")
    push.add_argument("repo_id", help="the Hub repository, e.g. user/my-vlm (the token: HF_TOKEN or `hf auth login`)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to commit to")
    push.add_argument("--commit-message", default=None)
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--base-repo", default=None, help="for an adapter: the repo its (local) base is published to")
    push.set_defaults(func=_push)
    export = commands.add_parser("export-remote-code", help="write auto_map + module files for trust_remote_code")
    export.add_argument("dir", help="a saved hf_mm model folder")
    export.set_defaults(func=_export_remote_code)
    native = commands.add_parser(
        "export-transformers",
        help="write the exactly equivalent transformers checkpoint (LLaVA, BLIP-2, Qwen2.5-VL, CLIP)",
    )
    native.add_argument("src", help="a saved hf_mm model folder")
    native.add_argument("dst", help="the folder to write the transformers checkpoint and processor to")
    native.set_defaults(func=_export_transformers)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
