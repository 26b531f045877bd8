"""nightly_report: a scheduled flow — every night at 03:00 Berlin time under `flow serve`.

    load_orders ── daily_revenue ── report

`Flow(schedule="0 3 * * *", timezone="Europe/Berlin")` declares when it is due; the cron
expression is read in that time zone (03:00 stays 03:00 across daylight-saving changes).
`flow serve sample_flows` runs it when due (trigger `schedule`); a night missed while the server
was down is caught up with one run when it starts again (`catch_up="once"`, the default). It is an
ordinary flow otherwise: `flow run` runs it now.

    flow schedules sample_flows      # when each flow here is next due
    flow serve sample_flows          # run the scheduled ones when due, until Ctrl-C
"""

import random

from dsl import Flow, log_metric, param, step

flow = Flow(
    "nightly_report",
    description="Yesterday's revenue per region, every night.",
    schedule="0 3 * * *",
    timezone="Europe/Berlin",
    catch_up="once",
)

REGIONS = ("north", "south", "east", "west")


@step
def load_orders(orders: int = param(500, help="orders to simulate"), seed: int = 11) -> list[dict]:
    """Yesterday's orders (simulated, seeded)."""
    rng = random.Random(seed)
    rows = [{"region": rng.choice(REGIONS), "amount": round(rng.uniform(5, 120), 2)} for _ in range(orders)]
    print(f"loaded {len(rows)} orders")
    return rows


@step
def daily_revenue(load_orders: list[dict]) -> dict[str, float]:
    """Revenue per region."""
    revenue = {region: 0.0 for region in REGIONS}
    for row in load_orders:
        revenue[row["region"]] += row["amount"]
    return {region: round(total, 2) for region, total in revenue.items()}


@step
def report(daily_revenue: dict[str, float]) -> str:
    """The text the morning mail would carry."""
    total = sum(daily_revenue.values())
    log_metric("revenue", total)
    lines = [f"{region:>6}: {amount:10.2f}" for region, amount in sorted(daily_revenue.items())]
    text = "\n".join([*lines, f" total: {total:10.2f}"])
    print(text)
    return text
