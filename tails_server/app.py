"""The HTTP surface: routes, thin handlers, and the one place errors become responses."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from . import __version__, logs, metrics, openapi, threads
from .auth import UPLOAD_METHODS, ApiKeys
from .config import Settings
from .downloads import serve
from .errors import NotFound, TailsError, from_os_error, one_line
from .health import Health
from .ids import RevRegId, TailsHash
from .index import Catalog, Follower, IndexRoutes, placement
from .ledger import LedgerClient
from .limits import ClientAddress, parse_networks
from .limits.rates import LISTINGS, WRITES, RateLimit, parse_rate, rate_limits
from .limits.slots import UploadSlots
from .socket_body import CLOSES_CONNECTION
from .storage import Name, Storage, open_storage
from .storage.budget import budget_middleware
from .trust import TrustedLedgers
from .uploads import Uploads

LOGGER = logging.getLogger(__name__)
STORAGE = web.AppKey("storage", Storage)
WORKER_THREADS = 32


@web.middleware
async def error_responses(request: web.Request, handler) -> web.StreamResponse:
    """Turn every TailsError into its status and one-line reason; never leak a traceback."""
    request_id = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    logs.REQUEST_ID.set(request_id)
    tag = {logs.REQUEST_ID_HEADER: request_id}  # every response carries it, so clients and logs match
    try:
        return _finished(request, await handler(request), tag)
    except TailsError as exc:
        request[metrics.ERROR] = exc
        if request.method == "PUT":  # operators need to see why an upload was refused
            LOGGER.warning(
                "refused %s %s (request %s): %d %s%s", request.method, one_line(request.path), request_id, exc.status, exc.reason, _detail(exc)
            )
        return _finished(request, web.Response(status=exc.status, text=exc.reason, headers=exc.headers), tag)
    except web.HTTPException as exc:
        exc.headers.update(tag)
        raise
    except asyncio.CancelledError:
        raise
    except ConnectionError:  # the client left mid-request: routine, and no one to answer (nginx's 499)
        return _finished(request, web.Response(status=499, reason="Client Closed Request"), tag)
    except OSError as exc:  # storage (or the process) failed in a way no handler expected: 503/507, not 500
        error = from_os_error(exc, writing=request.method in UPLOAD_METHODS)
        request[metrics.ERROR] = error
        LOGGER.error("storage error on %s %s (request %s): %s", request.method, one_line(request.path), request_id, exc)
        return _finished(request, web.Response(status=error.status, text=error.reason, headers=error.headers), tag)
    except Exception:
        LOGGER.exception("unexpected error on %s %s", request.method, one_line(request.path))
        return _finished(request, web.Response(status=500, text="Internal server error."), tag)


def _finished(request: web.Request, response: web.StreamResponse, tag: dict[str, str]) -> web.StreamResponse:
    """Tag the response; close the connection after it if a worker thread read the body (aiohttp's parser did not)."""
    response.headers.update(tag)
    if request.get(CLOSES_CONNECTION):
        response.force_close()
    return response


def require_api_key(keys: ApiKeys):
    """Requests that write need a valid token; reads stay public."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if request.method in UPLOAD_METHODS:
            await keys.check(request)
        return await handler(request)

    return middleware


def _detail(exc: TailsError) -> str:
    detail = getattr(exc, "detail", None)
    return f" ({detail})" if detail else ""


class TailsRoutes:
    """One handler per route; each parses its path once and delegates."""

    def __init__(self, storage: Storage, catalog: Catalog, uploads: Uploads, admin: ApiKeys | None, stall_timeout: float) -> None:
        self.storage = storage
        self.catalog = catalog
        self.uploads = uploads
        self.admin = admin  # set only with --allow-delete
        self.stall_timeout = stall_timeout  # a download whose client takes nothing this long is cut off

    def table(self) -> list[web.AbstractRouteDef]:
        """Specific prefixes first; everything else is a registry id (which may contain '/')."""
        return [
            web.get("/", self.index, allow_head=True),
            web.get("/openapi.json", self.openapi),
            web.get("/hash/{tails_hash}", self.get_by_hash, allow_head=True),
            web.put("/hash/{tails_hash}", self.put_by_hash),
            web.get("/{rev_reg_id:.+}", self.get_by_id, allow_head=True),
            web.put("/{rev_reg_id:.+}", self.put_by_id),
        ] + ([
            web.delete("/hash/{tails_hash}", self.delete_by_hash),
            web.delete("/{rev_reg_id:.+}", self.delete_by_id),
        ] if self.admin else [])

    async def index(self, request: web.Request) -> web.Response:
        """Identify the service."""
        return web.json_response({"service": "tails-server", "version": __version__})

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI description of this API."""
        return web.json_response(openapi.document())

    async def get_by_hash(self, request: web.Request) -> web.StreamResponse:
        """Download a file by its tails hash."""
        return await self._send(request, TailsHash.parse(request.match_info["tails_hash"]))

    async def get_by_id(self, request: web.Request) -> web.StreamResponse:
        """Download the file published for a registry id."""
        return await self._send(request, _rev_reg_id(request))

    async def put_by_hash(self, request: web.Request) -> web.Response:
        """Upload a file named by its own hash."""
        tails_hash = TailsHash.parse(request.match_info["tails_hash"])
        with self.uploads.admitted(request):
            return web.Response(text=str(await self.uploads.put_by_hash(request, tails_hash)))

    async def put_by_id(self, request: web.Request) -> web.Response:
        """Upload a registry's file, checked against the ledger named by the genesis part."""
        rev_reg_id = _rev_reg_id(request)
        with self.uploads.admitted(request):
            return web.Response(text=str(await self.uploads.put_by_id(request, rev_reg_id)))

    async def delete_by_hash(self, request: web.Request) -> web.Response:
        """Admin: remove a file and every registry id that points at it."""
        tails_hash = TailsHash.parse(request.match_info["tails_hash"])
        await self.admin.check(request, "Deletions")
        return _deleted(await self.catalog.delete(tails_hash), request)

    async def delete_by_id(self, request: web.Request) -> web.Response:
        """Admin: remove a registry id (its file stays if stored by hash or for other ids)."""
        rev_reg_id = _rev_reg_id(request)
        await self.admin.check(request, "Deletions")
        return _deleted(await self.catalog.delete(rev_reg_id), request)

    async def _send(self, request: web.Request, name: Name) -> web.StreamResponse:
        """Prepared here, inside the error middleware: a store failing before the headers is a 503."""
        stored = await self.storage.open(name)
        if stored is None:
            raise NotFound("404: Not Found")
        response = serve(stored, self.stall_timeout)
        response.headers[logs.REQUEST_ID_HEADER] = logs.REQUEST_ID.get()  # sent before the middleware could add it
        try:
            await response.prepare(request)
        except ConnectionError:  # the client left, or the store failed mid-body: nothing more to send
            pass
        return response


def _rev_reg_id(request: web.Request) -> RevRegId:
    """Parse from the raw path, so an encoded '/' (%2F) never acts as a separator."""
    return RevRegId.from_raw_path(request.rel_url.raw_path[1:])


def _deleted(existed: bool, request: web.Request) -> web.Response:
    if not existed:
        raise NotFound("404: Not Found")
    LOGGER.warning("deleted %s", one_line(request.path))  # client text: no control characters in the log
    return web.Response(text="Deleted.")


def create_app(settings: Settings) -> web.Application:
    """Wire storage, ledger and uploads into an application (storage is prepared on startup)."""
    storage = open_storage(settings.storage_path, settings.storage, settings.s3_endpoint_url, settings.s3_cache_size)
    catalog = Catalog(storage, settings.index_file)
    follower = Follower(catalog, settings.index_sync_interval, settings.index_rescan_interval)
    ledger = LedgerClient(settings.ledger_timeout, settings.pool_cache_size)
    addresses = ClientAddress(parse_networks(settings.trusted_proxies))
    rates = {WRITES: parse_rate(settings.rate_limit_writes), LISTINGS: parse_rate(settings.rate_limit_listings)}
    limits = {kind: RateLimit(count, period) for kind, (count, period) in rates.items() if count}
    uploads = Uploads(
        storage,
        ledger,
        settings.max_tails_size,
        settings.max_genesis_size,
        settings.read_timeout,
        settings.min_free_space,
        TrustedLedgers.load(settings.ledgers),
        UploadSlots(settings.max_uploads, settings.max_uploads_per_client, settings.upload_min_rate, settings.upload_deadline,
                    addresses),
        catalog.publish,
    )
    keys = ApiKeys(settings.api_key_hashes)
    app = web.Application(
        middlewares=[  # only what this configuration needs: each one costs every request a call
            error_responses,
            *([budget_middleware(settings.s3_timeout)] if settings.storage else []),
            *([rate_limits(limits, addresses, metrics.rate_limited)] if limits else []),
            *([require_api_key(keys)] if keys.enabled else []),
        ],
        handler_args={"max_line_size": settings.max_header_size, "max_field_size": settings.max_header_size},
    )
    app[STORAGE] = storage  # the front door serves plain downloads from it too
    app.add_routes(Health(storage, ledger, catalog).table())  # fixed paths before the catch-all id routes
    app.add_routes(IndexRoutes(catalog).table())
    metrics.install(app, storage, ledger, catalog)
    admin = ApiKeys(settings.admin_key_hashes) if settings.allow_delete else None
    app.add_routes(TailsRoutes(storage, catalog, uploads, admin, settings.idle_timeout).table())

    background: list[asyncio.Task] = []

    async def startup(_app: web.Application) -> None:
        # Worker threads hash, write and fsync uploads and wait on locks: enough of them that a
        # few slow fsyncs never stall the hashing of other uploads.
        asyncio.get_running_loop().set_default_executor(threads.pool(WORKER_THREADS, "tails-io"))
        LedgerClient.configure(settings.ledger_timeout)
        await storage.start()
        catalog.open()
        LOGGER.info("storing tails files in %s; index in %s", storage.describe(), settings.index_file)
        if problem := placement.warning(settings.index_file, catalog.filesystem):
            LOGGER.warning(problem)
        background.append(asyncio.create_task(follower.run()))

    async def shutdown(_app: web.Application) -> None:
        uploads.stop_event_loop_bodies()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await follower.stop()

    async def cleanup(_app: web.Application) -> None:
        uploads.threads.shutdown(wait=False)
        await ledger.close()
        await catalog.notes.flush()
        await asyncio.get_running_loop().run_in_executor(None, catalog.close)
        await storage.close()

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app
