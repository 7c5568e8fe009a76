"""GET /api/clusters: every cluster, or one page of them with ?limit and ?offset.

The original web UI asks for the whole list without parameters. A large
inventory is then streamed (docs/api.md): read in pieces of PIECE clusters
by name, each turned into JSON and sent before the next is read, so a
worker holds one piece at a time, not 100,000 clusters and their 47 MB of
JSON. A list that fits in one piece is answered as before, in one body with
its Content-Length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db import router
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from clusters import queries
from clusters.errors import json_error
from clusters.models import Cluster
from clusters.serializers import cluster_to_dict
from kindler.db.failover.pinning import pinned_alias

# The most clusters one answer lists: the whole inventory up to this size.
LIST_CAP = 100_000
# Clusters read, and turned into JSON, at a time.
PIECE = 1_000
# JsonResponse's own encoding, so a streamed list reads byte for byte as one answered whole.
ENCODER = DjangoJSONEncoder


def cluster_list(request: HttpRequest) -> HttpResponseBase:
    """Answer GET /api/clusters: 400 for a bad ?limit or ?offset, else the clusters asked for."""
    limit = whole_number(request.GET.get("limit"), 1, LIST_CAP, default=LIST_CAP)
    offset = whole_number(request.GET.get("offset"), 0, LIST_CAP, default=0)
    errors = [
        {
            "loc": ["query", name],
            "msg": f"Input should be a whole number from {least} to {LIST_CAP}",
        }
        for name, value, least in (("limit", limit, 1), ("offset", offset, 0))
        if value is None
    ]
    if limit is None or offset is None:
        return json_error(400, errors)
    first = queries.clusters_page(min(limit, PIECE), offset)
    if len(first) < PIECE or limit <= PIECE:
        return HttpResponse(encode(first), content_type="application/json")
    alias = router.db_for_read(Cluster)
    return StreamingHttpResponse(stream(first, limit, alias), content_type="application/json")


def whole_number(raw: str | None, least: int, most: int, default: int) -> int | None:
    """Return raw as a whole number from least to most, default when absent, None if neither."""
    if raw is None:
        return default
    # isdigit() alone is true for "²", which int() refuses, and int() refuses
    # more than 4,300 digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not least <= int(raw) <= most:
        return None
    return int(raw)


def encode(rows: list[queries.ClusterRow]) -> bytes:
    return json.dumps([cluster_to_dict(row) for row in rows], cls=ENCODER).encode()


def stream(first: list[queries.ClusterRow], limit: int, alias: str) -> Iterator[bytes]:
    """Yield the JSON list of first and the clusters after it on alias, up to limit in all."""
    yield b"[" + encode(first)[1:-1]
    sent, piece = len(first), first
    while len(piece) == PIECE and sent < limit:
        # One database for the whole list: the two order names differently
        # (PostgreSQL by its collation, SQLite byte by byte), so a list that
        # changed database halfway could skip or repeat clusters. Should that
        # database fail meanwhile, the answer ends unfinished (no closing
        # chunk), which clients report as an error: never a shorter list.
        with pinned_alias(alias):
            piece = queries.clusters_page(min(PIECE, limit - sent), after=piece[-1].name)
        if piece:
            yield b", " + encode(piece)[1:-1]
        sent += len(piece)
    yield b"]"
