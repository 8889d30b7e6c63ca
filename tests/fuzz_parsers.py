"""Coverage-guided fuzzing (atheris) of the parsers at the edge: `python tests/fuzz_parsers.py -runs=N`.

Any exception other than the parsers' own refusals, or a broken invariant, is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tails_server.errors import BadRequest
    from tails_server.genesis import Genesis, InvalidGenesis
    from tails_server.ids import RevRegId, TailsHash


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    choice = provider.ConsumeIntInRange(0, 2)
    if choice == 0:
        text = provider.ConsumeUnicodeNoSurrogates(400)
        try:
            parsed = RevRegId.from_raw_path(text)
        except BadRequest:
            return
        name = parsed.storage_name
        assert "/" not in name and name not in (".", "..") and len(name.encode()) <= 255
        assert RevRegId.from_storage_name(name).value == parsed.value
    elif choice == 1:
        try:
            TailsHash.parse(provider.ConsumeUnicodeNoSurrogates(60))
        except BadRequest:
            return
    else:
        try:
            Genesis.parse(provider.ConsumeBytes(4000))
        except InvalidGenesis:
            return


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
