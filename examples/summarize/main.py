"""summarize: read the text files of a folder and have the model summarise each.

Usage: summarize [FOLDER]          (default /notes)

Reads with fs_list and fs_read, which the kernel allows only under the
app's capability fs.read:/notes; asks the model once per file on a fresh
context (ask); prints progress as it goes and returns one record per file.
"""

import text

folder = argv[0] if argv else "/notes"
entries = fs_list(path=folder)["entries"]
result = []
for entry in entries:
    if entry["kind"] != "file":
        continue
    body = fs_read(path=entry["path"])["data"]
    summary = ask([{"role": "system", "content": manifest["system"]},
                   {"role": "user", "content": text.clip(body)}], max_tokens=48, temperature=0.0)
    print(entry["name"] + ": " + summary)
    result.append({"file": entry["path"], "words": text.count_words(body), "summary": summary})
if not result:
    raise SyscallError("ENODATA", folder + " holds no files")
