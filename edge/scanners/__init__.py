"""Barcode scanners (issue 21): what a scanner sends, read from a serial port (pyserial) or a USB
HID keyboard (python-evdev, optional), and what a scan means for the gateway.

- :mod:`edge.scanners.hid`: pure, Linux key events to scanned strings (us and de layouts).
- :mod:`edge.scanners.evdev_reader`: a thin async shell over python-evdev around that decoder.
- :mod:`edge.scanners.serial_reader`: an async reader of terminated lines over pyserial.
- :mod:`edge.scanners.config`: the ``[scanner]`` table.
- :mod:`edge.scanners.route`: pure, a scanned string to an operation pick, a component batch, a
  badge or a refusal.
- :mod:`edge.scanners.service`: the configured reader's scans, each routed (what the daemon
  wires in); :mod:`edge.scanners.errors`: ``ScannerUnavailable``.

Nothing is imported here, so importing one part never pulls in another's optional package.
"""
