"""Rule embed: embeddings of one dataset by one model (or the k-mer-spectrum baseline)."""

import torch

from dnalm import datasets, embed, external, gpus, logs

log = logs.to_file(snakemake.log[0])
gpu_lease = gpus.pin(snakemake.resources.get("gpu", 0), log=log)  # own GPUs, before CUDA starts
settings = snakemake.params.settings
torch.set_num_threads(snakemake.threads)
ids, seqs = datasets.dataset_sequences(
    list(snakemake.input.sequences), snakemake.wildcards.dataset, settings.get("splits")
)
if "model" in snakemake.input.keys() and external.is_external(snakemake.input.model):
    # a published checkpoint (results/models/<name>/dnalm.json points at it): its own tokenizer and pooling
    model, feeder, meta = external.load(snakemake.input.model)
    vectors = external.embed_sequences(model, feeder, seqs, pooling=meta["pooling"], batch_size=settings["batch_size"])
elif "model" in snakemake.input.keys():
    model, meta = embed.load_encoder(snakemake.input.model)
    # sequences longer than the training crop are embedded window by window (no untrained positions)
    vectors = embed.embed_sequences(
        model, meta, seqs, batch_size=settings["batch_size"], max_tokens=meta["max_tokens"], long="chunk"
    )
else:
    vectors = embed.kmer_spectrum(seqs, settings["baseline_k"])
embed.save_embeddings(snakemake.output[0], ids, vectors)
log.info("%d sequences -> %s embeddings", len(ids), vectors.shape)
