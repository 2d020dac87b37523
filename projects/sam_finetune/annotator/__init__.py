"""The interactive annotation page of sam_finetune: `python projects/sam_finetune/annotate.py`.

images.py   the images folder (every path from the client is confined to it)
model.py    checkpoint loading, the image embedding and the prompt -> mask decoding
cache.py    image embeddings on disk, keyed by model + preprocessing + image content; background prefetch
store.py    the COCO (RLE) annotation file: atomic, versioned saves
server.py   the FastAPI app and the static page (static/)
bench.py    click -> mask and embedding times
"""
