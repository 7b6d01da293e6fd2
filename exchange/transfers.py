"""Deposits and withdrawals: the rules and the replies, once, for `tickline serve` and the cluster.

An operator's transfer goes: words in (`terms`: the ref's form, the asset, an exact
amount), the account checked against the account store by the caller (the store is a
file, and the core does no I/O; `unknown_account` words the refusal), then the core's
sequencer (exchange/sequencer.py): a ref already applied is not applied again, a
withdrawal needs the funds. `reply` turns the outcome into the one line both drivers print:

    OK <seq> deposited | OK <seq> withdrawn
    OK <seq> duplicate: ref <ref> was applied before; nothing changed
    ERR <reason> <text>
"""

from __future__ import annotations

import re

from exchange.instruments import MAX_STEPS, TOO_LARGE, Asset
from protocol.messages import Problem, Reason, Transfer
from protocol.text import clip

REF = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
USAGE = "usage: DEPOSIT|WITHDRAW <account> <asset> <amount> <ref>"


def terms(verb: str, account: str, asset_name: str, amount_text: str, ref: str, assets: dict[str, Asset]) -> Transfer | Problem:
    """A transfer from an operator's words, or the first rule they break. A negative amount
    turns the verb around (DEPOSIT -5 is WITHDRAW 5): the cluster's `deposit` debits so."""
    verb = verb.upper()
    if verb not in ("DEPOSIT", "WITHDRAW"):
        return Problem(Reason.BAD_REQUEST, USAGE)
    asset = assets.get(asset_name.upper())
    if asset is None:
        return Problem(Reason.UNKNOWN_ASSET, f"{clip(asset_name)} is not an asset here; assets: {' '.join(assets)}")
    negative = amount_text.startswith("-")
    amount = asset.parse(amount_text[1:] if negative else amount_text)
    if amount == TOO_LARGE:
        return Problem(Reason.BAD_AMOUNT, f"{clip(amount_text)} is more than one transfer may move: {asset.format(MAX_STEPS)} {asset.name}")
    if amount is None:
        return Problem(Reason.BAD_AMOUNT, f"{clip(amount_text)} is not a positive amount in units of {asset.unit.text} (a negative one: the other way)")
    if not REF.fullmatch(ref):
        return Problem(Reason.BAD_REF, "a ref is 1-64 of A-Z a-z 0-9 . _ : -")
    credit = (verb == "DEPOSIT") != negative
    return Transfer(account, asset.name, amount if credit else -amount, ref)


def parse_line(line: str, assets: dict[str, Asset]) -> Transfer | Problem:
    """`DEPOSIT|WITHDRAW <account> <asset> <amount> <ref>` (the admin channel's line)."""
    words = line.split()
    if len(words) != 5:
        return Problem(Reason.BAD_REQUEST, USAGE)
    verb, account, asset, amount, ref = words
    return terms(verb, account, asset, amount, ref, assets)


def unknown_account(account: str) -> Problem:
    return Problem(Reason.UNKNOWN_ACCOUNT, f"no account {clip(account)}; add it with: tickline accounts add {clip(account)}")


def reply(cmd: Transfer | None, outcome: int | Problem) -> str:
    """The one-line answer to a transfer: its seq, the seq it was applied as before, or why not."""
    if isinstance(outcome, Problem):
        if outcome.reason is Reason.DUPLICATE_REF and cmd is not None:
            return f"OK {outcome.seq} duplicate: ref {cmd.ref} was applied before; nothing changed"
        return f"ERR {outcome.reason.value} {outcome.text}"
    assert cmd is not None
    return f"OK {outcome} {'deposited' if cmd.amount > 0 else 'withdrawn'}"
