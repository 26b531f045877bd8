"""inbox_loop: process sensor readings as they arrive, again and again (a looping flow).

    scan_inbox ── parse_file (one per file) ── summarize

Each iteration looks at the inbox directory (`scan_inbox` has `cache=False`: it must look every
time), parses every file in it (`foreach`: a file already parsed in an earlier iteration has the
same content, so it comes from the cache) and summarizes all readings so far. Run it in a loop
while data keeps arriving; drop `*.csv` files with one number per line into the inbox (by default
`sample_flows/inbox/`, which holds two files to start with):

    flow run sample_flows/inbox_loop.py --loop --every 5s -p inbox=/tmp/inbox
    flow run sample_flows/inbox_loop.py --loop --max-iterations 3   # back to back, then stop

Ctrl-C ends the loop after the iteration in flight (twice: stops that one too). Each iteration is
a run in `flow runs` with the trigger `loop`.
"""

from pathlib import Path

from dsl import Flow, log_metric, param, step

flow = Flow("inbox_loop", description="Parse and summarize the readings that arrived in an inbox.")


INBOX = str(Path(__file__).with_name("inbox"))


@step(cache=False)
def scan_inbox(inbox: str = param(INBOX, help="directory where *.csv readings arrive")) -> list[dict]:
    """Every readings file in the inbox, oldest name first (none yet if the directory is missing)."""
    directory = Path(inbox)
    files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    print(f"{len(files)} file(s) in {directory}")
    return [{"name": f.name, "text": f.read_text(encoding="utf-8")} for f in files]


@step(foreach="scan_inbox")
def parse_file(scan_inbox: dict) -> dict:
    """One file's readings: one number per line; a line that is not a number is counted as bad."""
    values, bad = [], 0
    for line in scan_inbox["text"].splitlines():
        if not line.strip():
            continue
        try:
            values.append(float(line))
        except ValueError:
            bad += 1
    print(f"{scan_inbox['name']}: {len(values)} readings, {bad} bad")
    return {"name": scan_inbox["name"], "values": values, "bad": bad}


@step
def summarize(parse_file: list[dict]) -> dict:
    """Totals over every file so far."""
    values = [v for parsed in parse_file for v in parsed["values"]]
    summary = {
        "files": len(parse_file),
        "readings": len(values),
        "mean": sum(values) / len(values) if values else None,
        "bad": sum(parsed["bad"] for parsed in parse_file),
    }
    log_metric("readings", summary["readings"])
    mean = "n/a" if summary["mean"] is None else f"{summary['mean']:.2f}"
    print(f"{summary['files']} file(s), {summary['readings']} readings, mean {mean}")
    return summary
