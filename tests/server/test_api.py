"""The server extension's REST API against a real jupyter_server and real kernels it started.

A kernel loads real demo models with ``%load_ext nbmodels``; the API lists them
by the server's kernel id, unloads one, frees the rest, shows force's plan
without running it, and forces it; after each step the kernel itself says what
it holds. The refusals: no login, a cookie login without the XSRF token, a
kernel id this server does not run, a kernel without nbmodels, a bad body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.slow

TIMEOUT = 120


async def run(km: Any, code: str) -> str:
    """Run ``code`` in the kernel (as a notebook cell would) and return what it printed."""
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=TIMEOUT)
        printed: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                printed.append("\n".join(msg["content"]["traceback"]))

        reply = await client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(printed)
        return "".join(printed)
    finally:
        client.stop_channels()


async def held(km: Any) -> list[str]:
    out = await run(km, "import nbmodels\nprint(sorted(i.name for i in nbmodels.get_manager().list()))")
    return list(json.loads(out.strip().replace("'", '"')))


async def get(jp_fetch: Any) -> dict[str, Any]:
    response = await jp_fetch("nbmodels", "api", "kernels")
    assert response.code == 200
    return dict(json.loads(response.body))


async def post(jp_fetch: Any, kernel_id: str, action: str, **body: Any) -> dict[str, Any]:
    response = await jp_fetch("nbmodels", "api", "kernels", kernel_id, action, method="POST", body=json.dumps(body))
    return dict(json.loads(response.body))


async def refused(call: Any) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as caught:
        await call
    error = caught.value
    body = error.response.body if error.response is not None else b"{}"
    return error.code, str(json.loads(body or b"{}").get("message", ""))


@contextlib.asynccontextmanager
async def started(serverapp: Any) -> AsyncIterator[Any]:
    """A kernel the server started, as it does when a user opens a notebook."""
    manager = serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3")
    try:
        yield manager.get_kernel(kernel_id)
    finally:
        await manager.shutdown_kernel(kernel_id, now=True)


async def test_lists_unloads_frees_and_forces_through_the_api(jp_fetch: Any, jp_serverapp: Any) -> None:
    async with started(jp_serverapp) as kernel:
        await lists_unloads_frees_and_forces(jp_fetch, kernel)


async def lists_unloads_frees_and_forces(jp_fetch: Any, kernel: Any) -> None:
    kid = kernel.kernel_id
    listing = await get(jp_fetch)
    (row,) = listing["kernels"]
    assert row["id"] == kid and row["nbmodels"] is False and row["models"] == []

    await run(
        kernel,
        "%load_ext nbmodels\n"
        "%load_model enc demo:mlp --kw size_mb=4\n"
        "%load_model clf demo:mlp --kw size_mb=2 seed=1\n"
        "%load_model big demo:mlp --kw size_mb=8 seed=2",
    )
    (row,) = (await get(jp_fetch))["kernels"]
    assert row["nbmodels"] is True and row["can_release"] is True and row["busy"] is False
    sizes = {m["name"]: m["bytes_by_device"] for m in row["models"]}
    assert set(sizes) == {"enc", "clf", "big"}
    assert 3.5 * 2**20 < sizes["enc"]["cpu"] < 4.5 * 2**20
    assert not any(m["held"] or m["loading"] for m in row["models"])
    assert listing["gpus"] == [] or all("total" in g for g in listing["gpus"])

    # Unload one model: the kernel agrees, and the listing no longer has it.
    reply = await post(jp_fetch, kid, "unload", name="clf")
    assert reply["released"] == ["clf"] and reply["still_alive"] == []
    assert await held(kernel) == ["big", "enc"]
    assert {m["name"] for m in (await get(jp_fetch))["kernels"][0]["models"]} == {"big", "enc"}

    # Free while a variable holds one model: released, but reported alive and listed as held.
    await run(kernel, "keep = nbmodels.get_manager().get('enc')")
    reply = await post(jp_fetch, kid, "free")
    assert sorted(reply["released"]) == ["big", "enc"]
    assert [alive["name"] for alive in reply["still_alive"]] == ["enc"]
    assert await held(kernel) == []
    (row,) = (await get(jp_fetch))["kernels"]
    assert [(m["name"], m["held"]) for m in row["models"]] == [("enc", True)]

    # Force's plan, as a dry run: it names the variable and changes nothing.
    plan = await post(jp_fetch, kid, "unload", name="enc", force=True, dry_run=True)
    assert plan["dry_run"] is True
    assert any("keep" in line for line in plan["lines"]), plan["lines"]
    assert (await run(kernel, "print('keep' in dir())")).strip() == "True"

    # Force runs exactly that plan: the variable goes, the model dies.
    reply = await post(jp_fetch, kid, "unload", name="enc", force=True)
    assert reply["still_alive"] == [] and not reply["errors"]
    assert (await run(kernel, "print('keep' in dir())")).strip() == "False"
    (row,) = (await get(jp_fetch))["kernels"]
    assert row["models"] == []


async def test_refuses_strangers_forged_posts_unknown_kernels_and_bad_requests(
    jp_fetch: Any, jp_serverapp: Any
) -> None:
    async with started(jp_serverapp) as kernel:
        await refuses(jp_fetch, jp_serverapp, kernel)


async def refuses(jp_fetch: Any, jp_serverapp: Any, kernel: Any) -> None:
    kid = kernel.kernel_id
    # No login at all.
    code, _ = await refused(jp_fetch("nbmodels", "api", "kernels", headers={"Authorization": ""}))
    assert code == 403
    code, _ = await refused(
        jp_fetch("nbmodels", "api", "kernels", kid, "free", method="POST", body="{}", headers={"Authorization": ""})
    )
    assert code == 403

    # A browser's cookie login without the XSRF token (a forged cross-site POST) is refused; with it, it passes.
    token = jp_serverapp.identity_provider.token
    set_cookies: list[str] = []
    for params in ({}, {"token": token}):  # the login page sets _xsrf; the token in its URL logs in
        page = await jp_fetch(
            "login", params=params, headers={"Authorization": ""}, follow_redirects=False, raise_error=False
        )
        set_cookies += page.headers.get_list("Set-Cookie")
    cookies = "; ".join(c.split(";", 1)[0] for c in set_cookies)
    assert "_xsrf=" in cookies, cookies
    code, message = await refused(
        jp_fetch(
            "nbmodels",
            "api",
            "kernels",
            kid,
            "free",
            method="POST",
            body="{}",
            headers={"Authorization": "", "Cookie": cookies},
        )
    )
    assert code == 403 and "xsrf" in message.lower()
    xsrf = next(c.split("=", 1)[1] for c in cookies.split("; ") if c.startswith("_xsrf="))
    response = await jp_fetch(
        "nbmodels",
        "api",
        "kernels",
        kid,
        "free",
        method="POST",
        body="{}",
        headers={"Authorization": "", "Cookie": cookies, "X-XSRFToken": xsrf},
        raise_error=False,
    )
    assert response.code == 409  # past the XSRF check: this kernel has not loaded nbmodels

    # A kernel id this server does not run (nor a pid, nor a path) is a 404 that says so.
    for unknown in ("0f0f0f0f-dead-beef-0000-000000000000", "1234", "..%2F..%2Fetc"):
        code, message = await refused(post(jp_fetch, unknown, "free"))
        assert code == 404 and "no kernel with id" in message

    # A kernel of this server that never loaded nbmodels: nothing to free, said so.
    code, message = await refused(post(jp_fetch, kid, "unload", name="enc"))
    assert code == 409 and "has not loaded nbmodels" in message

    # Bad bodies.
    code, message = await refused(post(jp_fetch, kid, "unload"))
    assert code == 400 and "name" in message
    code, message = await refused(post(jp_fetch, kid, "free", force="yes"))
    assert code == 400 and "force" in message


async def test_an_unknown_model_is_a_404_and_leaves_the_kernel_as_it_was(jp_fetch: Any, jp_serverapp: Any) -> None:
    async with started(jp_serverapp) as kernel:
        await unknown_model(jp_fetch, kernel)


async def unknown_model(jp_fetch: Any, kernel: Any) -> None:
    await run(kernel, "%load_ext nbmodels\n%load_model enc demo:mlp --kw size_mb=1")
    code, message = await refused(post(jp_fetch, kernel.kernel_id, "unload", name="nope"))
    assert code == 404 and "no model named 'nope'" in message
    assert await held(kernel) == ["enc"]


async def test_force_waits_for_the_running_cell_but_its_plan_does_not(jp_fetch: Any, jp_serverapp: Any) -> None:
    async with started(jp_serverapp) as kernel:
        await force_while_busy(jp_fetch, kernel)


async def force_while_busy(jp_fetch: Any, kernel: Any) -> None:
    await run(kernel, "%load_ext nbmodels\n%load_model enc demo:mlp --kw size_mb=1\nimport nbmodels, time")
    await run(kernel, "keep = nbmodels.get_manager().get('enc')")
    await post(jp_fetch, kernel.kernel_id, "unload", name="enc")  # released, still held by keep
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=TIMEOUT)
        msg_id = client.execute("time.sleep(6)")
        for _ in range(100):  # until the kernel says a cell runs
            (row,) = (await get(jp_fetch))["kernels"]
            if row["busy"]:
                break
            await asyncio.sleep(0.05)
        assert row["busy"] is True
        code, message = await refused(post(jp_fetch, kernel.kernel_id, "unload", name="enc", force=True))
        assert code == 409 and "running a cell" in message
        plan = await post(jp_fetch, kernel.kernel_id, "unload", name="enc", force=True, dry_run=True)
        assert any("keep" in line for line in plan["lines"])
        while True:  # the cell ends
            reply = await client.get_shell_msg(timeout=TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
    assert (await run(kernel, "print(keep is not None)")).strip() == "True"  # force never ran
