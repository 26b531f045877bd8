"""`flow run` of a 200-step chain, whole process, fresh store: `python -m benchmarks.whole`.

Issue 21's budget: 0.15 s. What a user waits for when they type `flow run` on a small pipeline:
interpreter start, imports, loading the flow, fingerprinting, starting the worker processes, running
every step in them, persisting every output, printing the plain report, and exit. Each sample is one
`flow run FILE --store DIR` subprocess of the installed console script, output piped (so the plain
reporter is used), with a fresh store each time; the figure is the median of the samples (default 7).

Bytecode caching is on, in a private `PYTHONPYCACHEPREFIX` written by one untimed run first (as in
`benchmarks.startup`), so the figure is what a normal install costs. For context it also times the
1-step flow of `benchmarks.startup` and a second, fully cached `flow run` of the chain, and splits the
figure into what a run pays once (the 1-step flow) and what each further step adds.

Sizes: `--size N` / `FLOW_BENCH_SIZE` (chain length, default 200), `--repeat N` (samples).

Last line: `whole: <s> s (budget 0.15) PASS|FAIL`.
"""

from __future__ import annotations

from benchmarks.common import chain_source, conclude, machine, median, options, tempdir, write_flow
from benchmarks.startup import ONE_STEP, clean_env, flow_command, timed, timed_with_cpu

BUDGET_S = 0.15


def main() -> None:
    opts = options(size=200, repeat=7)
    runs = opts.repeat
    print(
        f"`flow run` of a {opts.size}-step chain, whole process, fresh store, median of {runs} ({machine()})"
    )
    command = [*flow_command(), "run"]
    print(f"command: {' '.join(command)} FILE --store DIR")
    with tempdir() as root:
        env = clean_env(root / "pycache")
        chain = write_flow(root / "project", "chain", chain_source(opts.size))
        one = write_flow(root / "project", "one_step", ONE_STEP)
        timed([*command, str(chain), "--store", str(root / "warm")], root, env)  # writes the .pyc files
        samples: dict[str, list[float]] = {
            "chain, fresh store": [],
            "  its CPU (info)": [],
            "1-step flow (info)": [],
        }
        cached: list[float] = []
        for i in range(runs):  # interleaved: a burst of load on the machine hits every series alike
            store = root / f"store-{i}"
            wall, cpu = timed_with_cpu([*command, str(chain), "--store", str(store)], root, env)
            samples["chain, fresh store"].append(wall)
            samples["  its CPU (info)"].append(cpu)
            samples["1-step flow (info)"].append(
                timed([*command, str(one), "--store", str(root / f"one-{i}")], root, env)
            )
            cached.append(timed([*command, str(chain), "--store", str(store)], root, env))
        samples["chain, cached re-run (info)"] = cached
    for what, values in samples.items():
        print(
            f"  {what:<30} median {median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f}; "
            f"all {' '.join(f'{v:.3f}' for v in values)})"
        )
    figure = median(samples["chain, fresh store"])
    fixed = median(samples["1-step flow (info)"])
    per_step_ms = (figure - fixed) / max(opts.size - 1, 1) * 1000
    print(
        f"  split (info): {fixed:.3f} s paid once (the 1-step flow: start, imports, store, worker, exit), "
        f"{per_step_ms:.2f} ms per further step ({figure - fixed:.3f} s for {opts.size - 1})"
    )
    conclude("whole", figure, "s", BUDGET_S, figure <= BUDGET_S)


if __name__ == "__main__":
    main()
