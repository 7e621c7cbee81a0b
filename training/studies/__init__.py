"""One-off studies behind the release's choices: each a command that measures one question
on validation or out-of-fold series and writes its results file (never the test sets)."""

from training.generated import write_results


def finish_study(result: dict, block: str, args, name: str) -> int:
    """A study command's end: its results file and docs block written together, unless
    ``args.limit`` makes it a check of the command (which writes nothing); the block
    printed either way."""
    if args.limit is None:
        write_results(result, args.out, args.docs, name, block)
    print(block)
    return 0
