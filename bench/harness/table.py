"""One result row per (contender, size, latency), and the table they print as."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    contender: str
    orders: int
    latency: str
    wall: float
    cpu_contender: float
    cpu_shopify: float
    cpu_salesforce: float
    shopify_calls: int
    salesforce_calls: int
    peak_rss_mib: float
    records: int  # valid records the contender had to write (all six objects)
    result: str  # "ok" or what reconciliation found wrong
    scaled_from: int | None = None  # orders actually run, when figures are scaled linearly

    @property
    def rate(self) -> float:
        return self.records / self.wall if self.wall else 0.0

    @property
    def cpu_share(self) -> float:
        total = self.cpu_contender + self.cpu_shopify + self.cpu_salesforce
        return self.cpu_contender / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float, orders: int, records: int, *, per_record_calls: bool = True) -> Row:
        """Linear in the store's size; Salesforce calls too only when they are one per record (a Bulk
        script makes one job per object whatever the size, so its measured count is kept, a lower bound)."""
        sf_calls = round(self.salesforce_calls * factor) if per_record_calls else self.salesforce_calls
        return Row(self.contender, orders, self.latency, self.wall * factor, self.cpu_contender * factor,
                   self.cpu_shopify * factor, self.cpu_salesforce * factor, round(self.shopify_calls * factor),
                   sf_calls, self.peak_rss_mib, records, self.result, scaled_from=self.orders)


HEADER = ("contender", "orders", "latency", "wall s", "CPU s own/shop/sf", "own CPU", "Shopify calls",
          "SF calls", "peak RSS MiB", "records/s", "result")


def render(rows: list[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        mark = f" (scaled from {r.scaled_from:,})" if r.scaled_from else ""
        lines.append((
            r.contender, f"{r.orders:,}{mark}", r.latency, f"{r.wall:,.1f}",
            f"{r.cpu_contender:,.1f}/{r.cpu_shopify:,.1f}/{r.cpu_salesforce:,.1f}", f"{r.cpu_share:.0%}",
            f"{r.shopify_calls:,}", f"{r.salesforce_calls:,}", f"{r.peak_rss_mib:,.0f}", f"{r.rate:,.0f}", r.result,
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
