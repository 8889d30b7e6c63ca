"""The front door: plain downloads answered without aiohttp; everything else handed to aiohttp.

aiohttp spends more CPU on each request (request and response objects, a task, its writer) than
the kernel spends sending a 128 KiB file, and as much as the whole copy of a 4 MiB one costs the
server. Every connection to a server on local storage starts here, plaintext or TLS. A request
for a whole stored file and nothing else -- GET or HEAD, no body, no Range or conditional header,
a path that names a file that exists -- is answered here with the headers TailsFileResponse sends.
At the first request that is anything else, the connection and every byte not yet answered go to
aiohttp's protocol for good, so errors, uploads, ranges, 304s and every other route keep one
implementation: aiohttp's and the application's.

- door.py: one connection (parsing heads, pacing, timeouts, the hand-over);
- response.py: one 200 (sendfile on plaintext, page-cache chunks into TLS);
- doors.py: what the doors of one server share (finding files, heads, stopping).
"""

from .door import FrontDoor
from .doors import BY_HASH, BY_ID, FrontDoors

__all__ = ["BY_HASH", "BY_ID", "FrontDoor", "FrontDoors"]
