"""Time renderings SFMC uses: epoch milliseconds in ENS events, fixed-CST strings in the status GET.

The status GET renders US Central *Standard* time all year (UTC-06:00, no daylight saving), with no
offset in the string and a varying number of fractional digits (sfmc-api.md §8.3).
"""

import datetime as dt

CST = dt.timezone(dt.timedelta(hours=-6))


def epoch_ms(t: float) -> int:
    return int(round(t * 1000))


def render_cst(t: float, fraction_digits: int) -> str:
    """`t` as SFMC's status GET prints it; extra digits are truncated, as a 100 ns clock would."""
    micros = int(round(t * 1_000_000))
    seconds, micro = divmod(micros, 1_000_000)
    local = dt.datetime.fromtimestamp(seconds, CST)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction_digits > 0:
        text += "." + (f"{micro:06d}0")[:fraction_digits]
    return text
