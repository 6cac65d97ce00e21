"""Command-line options of sentiment-monitor, parsed by hand (the sandbox has no argparse).

`--name VALUE` and `--name=VALUE` are options; `--` ends them; every other
word is a headline.
"""

USAGE = ("usage: sentiment-monitor [--file PATH] [--chan NAME] [--alerts NAME] [--window N] "
         "[--threshold X] [--idle SECONDS] [HEADLINE...]")
KINDS = {"file": str, "chan": str, "alerts": str, "window": int, "threshold": float, "idle": float}
DEFAULTS = {"file": None, "chan": None, "alerts": "sentiment.alerts", "window": 5, "threshold": 0.6,
            "idle": 5.0}
HELP = USAGE + """
Labels financial headlines positive, negative or neutral with the model, and raises an alert when the
negative share of the last --window labels reaches --threshold (sent on the IPC channel --alerts).
Input: headlines as arguments, a headline file (--file PATH, one headline per line), or an IPC channel
(--chan NAME, JSON strings until null or --idle seconds of silence).
  Create a headline file in lmosh:  write /news/headlines.txt <<EOF   (one headline per line, then EOF)
  or copy a host file:             put headlines.txt /news/headlines.txt"""


def read_file(path):
    """The headline file's text; a missing one is explained in one line that says how to create it."""
    try:
        return fs_read(path=path)["data"]
    except SyscallError as exc:
        if exc.errno == "ENOENT":
            raise SyscallError("ENOENT", "no headline file at " + path + " \u2014 create it: write " + path
                               + " <<EOF (one headline per line, then a line EOF)") from None
        raise


def parse(args):
    """(options dict, headlines) or SyscallError EINVAL with the reason."""
    opts = dict(DEFAULTS)
    headlines = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            headlines.extend(args[i:])
            break
        if not word.startswith("--") or len(word) == 2:
            headlines.append(word)
            continue
        key, eq, value = word[2:].partition("=")
        if key not in KINDS:
            raise SyscallError("EINVAL", "unknown option --" + key + "; " + USAGE)
        if not eq:
            if i >= len(args):
                raise SyscallError("EINVAL", "--" + key + " needs a value")
            value = args[i]
            i += 1
        try:
            opts[key] = KINDS[key](value)
        except ValueError:
            raise SyscallError("EINVAL", "--" + key + ": bad value " + repr(value)) from None
    if opts["window"] < 1 or not 0 < opts["threshold"] <= 1 or not opts["idle"] > 0:
        raise SyscallError("EINVAL", "need --window >= 1, 0 < --threshold <= 1 and --idle > 0")
    if not headlines and not opts["file"] and not opts["chan"]:
        raise SyscallError("EINVAL", "no headlines: give them as arguments, --file PATH or --chan NAME "
                           "(sentiment-monitor --help)")
    return opts, headlines
