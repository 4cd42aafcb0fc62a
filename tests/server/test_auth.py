"""Like the extension template's check_auth: no Qustody handler answers without a login."""

from __future__ import annotations


async def test_extension_endpoints_require_authentication(
    jp_serverapp, jp_fetch, http_server_client, jp_base_url
):
    """Every handler the extension adds refuses a request without a token."""
    assert (await jp_fetch("qustody", "api", "guard")).code == 200  # it is there, with a token
    from tornado.web import RequestHandler

    from server_ext.handlers import HANDLERS

    for pattern, handler in HANDLERS:
        served = [
            m
            for m in ("get", "post", "put", "patch", "delete")
            if getattr(handler, m) is not getattr(RequestHandler, m)
        ]
        assert served, pattern
        for method in served:
            body = b"{}" if method in ("post", "put", "patch") else None
            response = await http_server_client.fetch(
                jp_base_url.rstrip("/") + pattern,
                method=method.upper(),
                body=body,
                raise_error=False,
            )
            assert response.code in (401, 403), (pattern, method, response.code)
