"""The pure core: the plant's rules for orders, counting, stops and confirmations.

No asyncio, no I/O, no clock reads: time comes in with each input. See ``core.WorkCenter``.
"""
