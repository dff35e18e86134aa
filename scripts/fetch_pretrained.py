"""Rule fetch_pretrained: resolve an external checkpoint (hub id or local folder), try its
tokenizer on DNA and write its manifest (dnalm.json); errors name the model entry."""

import sys

from dnalm import external, logs

log = logs.to_file(snakemake.log[0])
try:
    external.fetch(snakemake.wildcards.model, snakemake.params.settings, snakemake.output[0], log=log)
except external.ExternalModelError as err:
    key, _, problem = str(err).partition(": ")
    log.error("config key '%s': %s", key, problem)
    print(f"Error: config key '{key}': {problem}", file=sys.__stderr__)  # on the console too, not only in the log
    raise SystemExit(1) from None
