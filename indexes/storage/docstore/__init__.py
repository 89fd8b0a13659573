"""What every retriever of an index shares: the document store, its write-ahead log, the manifest, the index root
on disk, corpora, metadata columns and shard assignment."""
