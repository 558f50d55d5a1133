"""A simulated market: deterministic prices from a seed (same seed, same series)."""

from __future__ import annotations

import random

__all__ = ["DEFAULT_SYMBOLS", "Market"]

DEFAULT_SYMBOLS = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA", "TSLA")


class Market:
    """Geometric random walk per symbol, in cents so prices never drift in float noise."""

    def __init__(self, symbols: tuple[str, ...], seed: int) -> None:
        self._random = random.Random(seed)
        self.prices = {s: 10_000 + self._random.randrange(40_000) for s in symbols}

    def tick(self) -> dict[str, float]:
        """Move every price by at most 0.5% and return the new prices in dollars."""
        for symbol, cents in self.prices.items():
            step = self._random.uniform(-0.005, 0.005)
            self.prices[symbol] = max(1, round(cents * (1 + step)))
        return {symbol: cents / 100 for symbol, cents in self.prices.items()}
