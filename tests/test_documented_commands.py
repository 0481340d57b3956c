"""Every `hf-mm` command line quoted in the README and in `hf-mm --help` parses as printed: no option it shows is
refused (`hf-mm demo --quick` once was).

Each command runs through `hf_mm.cli.main` with argparse's `parse_known_args` stopping right after parsing: an
unrecognised or malformed argument fails the test, and nothing trains. Placeholders (SRC, DST, REPO_ID ...) get a
dummy value, optional flags in brackets are kept (`[--quick]`), and a choice stands for its first option.
"""

import argparse
import pathlib
import re
import shlex

import pytest

from hf_mm import cli

ROOT = pathlib.Path(__file__).parents[1]
PLACEHOLDER = re.compile(r"^[A-Z_]{2,}$")  # SRC, DST, DIR, OUTPUT_DIR, REPO_ID
FREE_FORM = ("[--field", "[--any_field", "...")  # "[--field value ...]": any recipe field


def documented_commands() -> list[str]:
    """`hf-mm ...` lines of the README's code blocks, its inline `hf-mm ...` spans, and the CLI's own help."""
    readme = (ROOT / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    lines = [line.split("  #")[0].strip() for line in blocks.splitlines() if line.startswith("hf-mm ")]
    lines += re.findall(r"`(hf-mm [^`]+)`", readme)
    lines += [line.split("   ")[0].strip() for line in cli.__doc__.splitlines() if line.startswith("hf-mm ")]
    return sorted(set(lines))


def arguments(command: str) -> list[str]:
    kept = []
    for word in shlex.split(command)[1:]:
        if word.startswith(FREE_FORM):
            break
        kept.append("x" if PLACEHOLDER.match(word) else word.strip("[]").split("|")[0])
    return kept


COMMANDS = documented_commands()


class Parsed(Exception):
    pass


def test_the_documentation_quotes_every_command():
    names = {arguments(command)[0] for command in COMMANDS}
    assert {
        "sft",
        "dpo",
        "contrastive",
        "qformer",
        "demo",
        "convert",
        "push",
        "export-remote-code",
        "compare",
    } <= names


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_parses(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes and the benchmarks live in the checkout
    parse_known_args = argparse.ArgumentParser.parse_known_args

    def parse_then_stop(self, args=None, namespace=None):
        if self.prog == "hf-mm":  # the top-level parser hands the rest to its subcommand's parser
            return parse_known_args(self, args, namespace)
        namespace, extras = parse_known_args(self, args, namespace)
        assert not extras, f"{command!r}: unrecognised {extras}"
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_then_stop)
    with pytest.raises(Parsed):
        cli.main(arguments(command))
