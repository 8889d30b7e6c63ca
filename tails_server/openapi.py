"""The OpenAPI 3.0 description of the HTTP API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from . import __version__

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_FILE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_HASH = {"name": "tails_hash", "in": "path", "required": True, "description": "base58(sha256(file)), 32 bytes", "schema": {"type": "string"}}
_ID = {
    "name": "rev_reg_id",
    "in": "path",
    "required": True,
    "description": "a legacy Indy revocation registry id (spaces as %20) or a did:indy REV_REG_DEF id",
    "schema": {"type": "string"},
}


def _reason(description: str) -> dict[str, Any]:
    return {"description": description, "content": _TEXT}


_READ = {
    "200": {"description": "the tails file", "content": _FILE},
    "206": {"description": "the requested range", "content": _FILE},
    "304": {"description": "not modified (If-None-Match matched the hash ETag)"},
    "400": _reason("malformed id or hash"),
    "404": _reason("nothing stored under this name"),
    "412": _reason("If-Match or If-Unmodified-Since did not hold"),
    "416": _reason("unsatisfiable range"),
    "503": _reason("storage unavailable, or too many connections; retry"),
}
_LIMITED = _reason("this client address asks too often or has too many uploads running; retry after Retry-After seconds")
_LISTING_UNAVAILABLE = _reason("the index is still being built (see /status); retry after Retry-After seconds")
_WRITE = {
    "200": _reason("stored; the body is the tails hash"),
    "400": _reason("a bad request, with its reason"),
    "401": _reason("an API token is required or wrong"),
    "403": _reason("the genesis names a ledger this server does not trust"),
    "404": _reason("the registry is not on the ledger"),
    "408": _reason("the body stopped, fell below the minimum rate, or passed the deadline"),
    "409": _reason("this exact file is already stored"),
    "413": _reason("a part is larger than allowed"),
    "429": _LIMITED,
    "503": _reason("ledger or storage unavailable, too many uploads, or the server is stopping; retry"),
    "507": _reason("storage is full"),
}
_MULTIPART_ID = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"genesis": {"type": "string"}, "tails": {"type": "string", "format": "binary"}},
            "required": ["tails"],
        },
        "encoding": {"tails": {"contentType": "application/octet-stream"}},
    }
}
_HASH_BODY = {
    "multipart/form-data": {
        "schema": {"type": "object", "properties": {"tails": {"type": "string", "format": "binary"}}, "required": ["tails"]}
    },
    **_FILE,
}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def document() -> dict[str, Any]:
    """The API as OpenAPI 3.0."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "tails-server", "version": __version__, "description": (
            "Publishes and serves revocation tails files. Every response carries X-Request-ID (the client's, "
            "or a new one). With --allow-delete, DELETE /{rev_reg_id} and DELETE /hash/{tails_hash} also exist "
            "for holders of an admin token; without it they answer 405."
        )},
        "paths": {
            "/hash/{tails_hash}": {
                "parameters": [_HASH],
                "get": {"summary": "Download a file by its hash", "responses": _READ},
                "head": {"summary": "Headers of a file by its hash", "responses": _READ},
                "put": {"summary": "Upload a file named by its hash", "requestBody": {"required": True, "content": _HASH_BODY}, "responses": _WRITE},
            },
            "/{rev_reg_id}": {
                "parameters": [_ID],
                "get": {"summary": "Download a registry's file", "responses": _READ},
                "head": {"summary": "Headers of a registry's file", "responses": _READ},
                "put": {
                    "summary": "Upload a registry's file, checked on the ledger the genesis names",
                    "requestBody": {"required": True, "content": _MULTIPART_ID},
                    "responses": _WRITE,
                },
            },
            "/match/{substring}": {
                "parameters": [{"name": "substring", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "summary": "Stored registry ids and tails hashes containing a substring, oldest first, in pages",
                    "parameters": [
                        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                         "description": "the cursor from a previous answer's Link header"},
                    ],
                    "responses": {
                        "200": {
                            "description": "names; when there are more, a `Link: <URL>; rel=\"next\"` header gives the rest",
                            "headers": {"Link": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}},
                        },
                        "400": _reason("bad limit or cursor, or a substring over 512 characters"),
                        "429": _LIMITED,
                        "503": _LISTING_UNAVAILABLE,
                    },
                },
            },
            "/index.json": {
                "get": {
                    "summary": "Every stored file (hash, size, created, registry ids), sorted by hash, in pages",
                    "parameters": [
                        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                        {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": "a page; `next` is the cursor for the following one", "content": _JSON},
                                  "400": _reason("bad limit or cursor"), "429": _LIMITED, "503": _LISTING_UNAVAILABLE},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics, summed over workers", "responses": {"200": {"description": "text exposition format", "content": _TEXT}}}},
            "/livez": {"get": {"summary": "Liveness", "responses": {"200": _reason("ok")}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {"200": _reason("ok"), "503": _reason("why not")}}},
            "/status": {"get": {"summary": "Status document", "responses": {"200": {"description": "ok", "content": _JSON}, "503": {"description": "storage unavailable", "content": _JSON}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0", "content": _JSON}}}},
        },
    }
