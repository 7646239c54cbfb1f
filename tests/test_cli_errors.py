"""Every subcommand, given bad arguments, answers with one line on stderr and an exit status,
never a Python traceback: 2 for a usage error (a malformed value, an unknown option, a
missing one), 1 for a failure (a missing file, a directory where a file belongs, a
directory that is not a tdxfs mount, a file that is not UTF-8 where text is read);
``tdxfs run`` and ``tdxfs shell`` fail with 125 and 127 as env(1) does.

The subcommands and their arguments are read from the parser, each argument with the kind
its row in ``tdxfs.cli.COMMANDS`` gives it. A new subcommand is covered as soon as it is in
the table; an argument of a kind this test has no bad values for fails the test, which
says what to add. Each case runs ``python -m tdxfs`` in a child with one bad value, the
arguments the subcommand requires given good ones, and a log file in the scratch
directory (so no daemon log is made elsewhere). Nothing here may mount: every mount point
a case gets is checked afterwards, and cleared if something was mounted.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tdxfs.cli import build_parser
from tests.mounting import COMMAND_TIMEOUT, force_unmount, fstype_at

USAGE, FAILURE, COMMAND_NOT_FOUND = "usage", "failure", "command"

# Bad values by kind: (label, value, what it is). A value starting with "@" names a path in
# the scratch directory (see ``scratch``); "@fresh" is a new, empty directory per case.
BAD = {
    "file": [("missing", "@missing", FAILURE), ("a directory", "@dir", FAILURE)],
    "text-file": [("missing", "@missing", FAILURE), ("a directory", "@dir", FAILURE),
                  ("not UTF-8", "@not-utf8", FAILURE)],
    "device": [("missing", "@missing", FAILURE), ("a directory", "@dir", FAILURE)],
    "log": [("a directory", "@dir", FAILURE)],
    "out": [("a directory", "@dir", FAILURE), ("in a missing directory", "@missing/out", FAILURE)],
    "out-dir": [("a regular file", "@file", FAILURE), ("under a regular file", "@file/out", FAILURE)],
    "mountpoint": [("missing", "@missing", FAILURE), ("a regular file", "@file", FAILURE)],
    "mount": [("missing", "@missing", FAILURE), ("not a mount", "@dir", FAILURE)],
    "state": [("a regular file", "@file", FAILURE)],
    "reportdata": [("not hex", "zz", USAGE), ("short", "00" * 63, USAGE)],
    "digest": [("not hex", "zz", USAGE), ("short", "00" * 47, USAGE)],
    "count": [("not a number", "x", USAGE), ("zero", "0", USAGE), ("negative", "-1", USAGE)],
    "counts": [("not numbers", "1,x", USAGE), ("zero", "0", USAGE), ("empty item", "1,,2", USAGE)],
    "seconds": [("not a number", "x", USAGE), ("zero", "0", USAGE), ("nan", "nan", USAGE)],
    "cpu": [("not a number", "x", USAGE)],
    "rtmr": [("out of range", "9", USAGE), ("not a number", "x", USAGE)],
    "event-type": [("unknown name", "EV_BOGUS", USAGE), ("never extended", "EV_NO_ACTION", USAGE)],
    "time": [("not a time", "yesterday", USAGE)],
    "fuse-options": [("unknown option", "bogus", USAGE), ("bad umask", "umask=999", USAGE)],
    "methods": [("unknown method", "bogus", USAGE)],
    "choice": [("not a choice", "bogus", USAGE)],
    "command": [("not found", "@missing", COMMAND_NOT_FOUND)],
    "text": [],  # any string is data to measure
}

# Good values for the arguments a subcommand requires, when another one is under test.
GOOD = {"mountpoint": "@fresh", "text-file": "@file", "rtmr": "3", "out-dir": "@fresh/out",
        "digest": "00" * 48, "command": "true"}


def leaves(parser, words=()):
    """(words, parser) of every subcommand, nested ones included."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, (*words, name))


def arguments(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def spelled(action, value):
    """The argv words giving ``value`` to ``action``."""
    if action.option_strings:
        return [action.option_strings[0], value]
    return ["--", value] if action.nargs == argparse.REMAINDER else [value]


def required_groups(parser):
    return [g for g in parser._mutually_exclusive_groups if g.required]


def filled(parser, tested=None):
    """argv words giving good values to everything the subcommand requires but ``tested``:
    (options, positionals), the positionals to go after the options."""
    words, tail = [], []
    for action in arguments(parser):
        if action is tested or not action.required:
            continue
        (tail if not action.option_strings else words).extend(spelled(action, GOOD[action.kind]))
    for group in required_groups(parser):
        if tested not in group._group_actions:
            first = group._group_actions[0]
            words.extend(spelled(first, GOOD[first.kind]))
    return words, tail


def context(parser, tested):
    """A log in the scratch directory wherever one is taken, so that no case makes a daemon
    log elsewhere; not next to a running mount under test (tdxfs run refuses the two together)."""
    if tested.kind == "mount":
        return []
    return [w for a in arguments(parser) if a.kind == "log" and a is not tested
            for w in (a.option_strings[0], "@log")]


def cases():
    out = []
    for words, parser in leaves(build_parser()):
        name = " ".join(words)
        failure = parser.get_default("failure")
        opts, positionals = filled(parser)
        out.append(pytest.param([*words, *opts, "--no-such-option", *positionals], USAGE, None, "--no-such-option",
                                failure, id=f"{name} --no-such-option"))
        # (tdxfs run's "-- COMMAND" is not one: without it, run refuses as its documentation says)
        if any(a.required and a.nargs != argparse.REMAINDER for a in arguments(parser)) or required_groups(parser):
            out.append(pytest.param(list(words), USAGE, None, None, failure, id=f"{name} (nothing it requires)"))
        for action in arguments(parser):
            if action.nargs == 0:  # a switch: no value to get wrong
                continue
            assert action.kind in BAD, (f"tdxfs {name} {action.option_strings or action.dest}: no bad values "
                                        f"for kind {action.kind!r}; add them to BAD in {__file__}")
            for label, value, what in BAD[action.kind]:
                opts, positionals = filled(parser, action)
                argv = [*words, *context(parser, action), *opts]
                mine = spelled(action, value)
                if action.nargs == argparse.REMAINDER:
                    argv += [*positionals, *mine]
                elif action.option_strings:
                    argv += [*mine, *positionals]
                else:
                    argv += [*positionals, *mine]
                flag = action.option_strings[0] if action.option_strings else action.dest
                out.append(pytest.param(argv, what, value, flag, failure, id=f"{name} {flag}: {label}"))
    for group in sorted({words[0] for words, _ in leaves(build_parser()) if len(words) > 1}):
        out.append(pytest.param([group], USAGE, None, None, 1, id=f"{group} (no subcommand)"))
    out.append(pytest.param([], USAGE, None, None, 1, id="(no subcommand)"))
    out.append(pytest.param(["bogus"], USAGE, None, "bogus", 1, id="bogus"))
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-errors")
    (d / "dir").mkdir()
    (d / "file").write_text("a file\n")
    (d / "not-utf8").write_bytes(b"\xff\xfe\xb7 not UTF-8\n")
    (d / "tmp").mkdir()
    return d


@pytest.fixture
def resolve(scratch, tmp_path):
    fresh = []

    def value(word: str) -> str:
        if not word.startswith("@"):
            return word
        name, _, rest = word[1:].partition("/")
        if name == "fresh":
            path = tmp_path / f"fresh{len(fresh)}"
            path.mkdir()
            fresh.append(str(path))
            return str(path / rest) if rest else str(path)
        return str(scratch / name / rest) if rest else str(scratch / name)

    yield value
    for path in fresh:  # a case that mounted is a failure, and is cleared
        mounted = fstype_at(path)
        force_unmount(path)
        assert mounted is None, f"{path} was mounted ({mounted})"


EXPECTED = {USAGE: lambda failure: 2, FAILURE: lambda failure: failure, COMMAND_NOT_FOUND: lambda failure: 127}


@pytest.mark.parametrize("argv, what, value, flag, failure", cases())
def test_a_bad_argument_is_one_line_and_an_exit_status(argv, what, value, flag, failure, resolve, scratch):
    argv = [resolve(w) for w in argv]
    # TMPDIR: what a refused run keeps for its post-mortem (tdxfs stress's log) stays in the scratch
    env = {**{k: v for k, v in os.environ.items() if k != "TDXFS_MOUNT"}, "TMPDIR": str(scratch / "tmp")}
    done = subprocess.run([sys.executable, "-m", "tdxfs", *argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=scratch, env=env, timeout=COMMAND_TIMEOUT)
    shown = f"tdxfs {' '.join(argv)}: exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert "Traceback" not in done.stderr, shown
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tdxfs: "), shown
    assert done.returncode == EXPECTED[what](failure), shown
    if flag is not None:  # the line names the argument: its flag, or the path given
        named = [flag]
        if value is not None and value.startswith("@"):
            named += [resolve(value), os.path.dirname(resolve(value))]
        assert any(n in lines[0] for n in named), f"the line names none of {named}\n{shown}"


# -- tdxfs bench without matplotlib: bench.json, and one line on how to get the plots -------------

NO_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None  # as if it were not installed\n"


def test_bench_without_matplotlib_writes_json_and_says_how_to_get_the_plots(tmp_path):
    code = NO_MATPLOTLIB + textwrap.dedent("""
        from tdxfs.bench import run
        assert not run.have_matplotlib()
        print(run.save({"seconds": 1.0, "methods": {}}, sys.argv[1]))
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["seconds"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and "pip install 'tdxfs[bench]'" in lines[0], done.stderr


def test_the_command_line_needs_no_matplotlib():
    code = NO_MATPLOTLIB + "from tdxfs.cli import main\nsys.exit(main(['bench', '--rounds', 'x']))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 2 and done.stderr.startswith("tdxfs: argument --rounds"), done.stderr
