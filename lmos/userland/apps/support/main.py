"""support: a customer-service agent answering from the user's FAQ file.

Usage: support QUESTION...

Why retrieve first rather than hand the whole FAQ to the model: FAQs outgrow a
small model's context, and the passages that match the question (BM25 via the
`search` tool) are what the answer must be grounded in.  The retrieved
passages go into the system turn; the agent may still search again itself.
Returns the agent's answer (text, calls, steps, finish_reason) and the
passages it was given (sources).
"""

FAQ = "/support/faq.md"

question = " ".join(argv).strip()
if not question:
    raise SyscallError("EINVAL", "ask a question, e.g. `support how do I reset my password`")
fs_stat(path=FAQ)  # ENOENT naming the file if there is no FAQ yet
hits = tool_call(name="search", args={"query": question, "path": "/support", "k": 2})["text"]
system = manifest["system"] + "\n\nFAQ passages:\n" + hits
result = agent([{"role": "system", "content": system}, {"role": "user", "content": question}])
result["sources"] = hits
