"""Sizes every layer shares.

`CHUNK_BYTES` is the one unit kmflow streams in (uploads received and staged, files hashed,
copied, served and downloaded): large enough that a 1 GiB file is about a thousand reads, small
enough that memory stays bounded whatever the file size, and a multiple of every device's
direct-I/O alignment.
"""

MIB = 1024 * 1024
CHUNK_BYTES = MIB
