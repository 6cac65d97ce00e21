"""Command-line options of sentiment-monitor, parsed by hand (the sandbox has no argparse).

`--name VALUE` and `--name=VALUE` are options; `--` ends them; every other
word is a headline.
"""

USAGE = ("usage: sentiment-monitor [--file PATH] [--chan NAME] [--alerts NAME] [--window N] "
         "[--threshold X] [--idle SECONDS] [HEADLINE...]")
KINDS = {"file": str, "chan": str, "alerts": str, "window": int, "threshold": float, "idle": float}
DEFAULTS = {"file": None, "chan": None, "alerts": "sentiment.alerts", "window": 5, "threshold": 0.6,
            "idle": 5.0}


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
    return opts, headlines
