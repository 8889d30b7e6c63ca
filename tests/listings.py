"""Reading a server's listings whole: /match followed through its Link headers, /index.json through its pages."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote


async def match_pages(http, base_url: str, substring: str, limit: int | None = None, max_pages: int = 1000) -> list[list[str]]:
    """Every page of /match/{substring}, following `Link: <…>; rel="next"` (bounded)."""
    url = f"{base_url}/match/{quote(substring, safe='')}" + (f"?limit={limit}" if limit else "")
    pages = []
    for _ in range(max_pages):
        async with http.get(url) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            pages.append(await resp.json())
            link = resp.headers.get("Link")
        if link is None:
            return pages
        assert link.endswith('>; rel="next"'), link
        url = base_url + link[1:link.index(">")]
    raise AssertionError(f"more than {max_pages} pages")


async def indexed_names(http, base_url: str) -> dict[str, str]:
    """Every name /index.json lists (hashes, and ids of each file), with its file's hash."""
    names, after = {}, ""
    for _ in range(10000):
        async with http.get(f"{base_url}/index.json", params={"limit": "100", "after": after}) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            page = await resp.json()
        for file in page["files"]:
            names[file["tails_hash"]] = file["tails_hash"]
            names.update({r["rev_reg_id"]: file["tails_hash"] for r in file["registries"]})
        if page["next"] is None:
            return names
        after = page["next"]
    raise AssertionError("too many pages")


async def matched_names(http, base_url: str) -> set[str]:
    """Every name `/match/` (the empty substring) lists."""
    return {name for page in await match_pages(http, base_url, "", limit=1000) for name in page}


async def until_listed(http, base_url: str, expected: dict[str, str], bound: float) -> float | None:
    """Seconds until both listings show exactly `expected`, or None if not within `bound`."""
    began = time.monotonic()
    while time.monotonic() - began < bound:
        if await indexed_names(http, base_url) == expected and await matched_names(http, base_url) == set(expected):
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    return None
