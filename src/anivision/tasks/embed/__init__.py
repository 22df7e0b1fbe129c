"""``anivision embed``: embeddings of a whole image collection, in resumable shards, one rank per shard."""

from anivision.tasks.embed.collection import EmbeddedCollection, EmbedSource, embed_collection, embedding_source, load_collection

__all__ = ["EmbeddedCollection", "EmbedSource", "embed_collection", "embedding_source", "load_collection"]
