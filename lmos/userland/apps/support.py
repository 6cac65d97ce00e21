"""``support``: a customer-service agent answering from the user's FAQ file.

Why retrieve first rather than hand the whole FAQ to the model: FAQs outgrow a
small model's context, and the passages that match the question (BM25 via the
``search`` tool) are what the answer must be grounded in.  The retrieved
passages go into the system turn; the agent may still search again itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lmos.errors import Errno, SyscallError
from lmos.userland.agent import run_agent

FAQ = "/support/faq.md"


async def main(sys: Any, argv: list[str], manifest: Any) -> Any:
    question = " ".join(argv).strip()
    if not question:
        raise SyscallError(Errno.EINVAL, "support: ask a question, e.g. `support how do I reset my password`")
    await sys.call("fs_stat", path=FAQ)  # ENOENT with a clear path if there is no FAQ
    hits = (
        await sys.call("tool_call", name="search", args={"query": question, "path": "/support", "k": 2})
    ).text
    system = f"{manifest.system}\n\nFAQ passages:\n{hits}"
    r = await run_agent(
        sys,
        [{"role": "system", "content": system}, {"role": "user", "content": question}],
        tools=list(manifest.tools),
        max_steps=manifest.max_steps,
    )
    out: dict[str, Any] = msgspec.to_builtins(r)
    out["sources"] = hits
    return out
