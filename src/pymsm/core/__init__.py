"""Pure session logic: no sockets, asyncio, threads, sleeps or wall clock. Callers pass `now`."""
