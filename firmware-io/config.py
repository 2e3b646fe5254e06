"""The board's settings: edit them here, then copy this file to the board (see README.md).

Pin numbers are the Pico's GPIO numbers (GPn), not its physical pin numbers.
"""

# The Modbus side. The gateway's [[sources.modbus]] block must say the same.
UNIT_ID = 1  # 1-247
BAUDRATE = 19200
PARITY = "E"  # "N", "E" or "O"; the Modbus serial line standard's default is 8E1
STOP_BITS = 1
# "uart": an RS-485 transceiver on UART0 (the gateway's /dev/ttyUSB0 or /dev/ttyAMA0).
# "usb": the Pico's own USB serial port (the gateway's /dev/ttyACM0); the REPL is off then,
# see MAINTENANCE_PIN.
SERIAL = "uart"
UART_ID = 0
TX_PIN = 0
RX_PIN = 1
DE_PIN = 2  # the transceiver's DE and /RE, tied together; None for a plain TTL or RS-232 link

# Pulse inputs: one counter channel per pin, in this order (channel 0 first; at most 8).
COUNT_PINS = (10, 11, 12, 13)
# An opto-coupler pulls the pin to ground while the machine's signal is on: active low, with
# the pull-up on. Set 1 and PULL = "down" for an input that drives the pin high.
ACTIVE_LEVEL = 0
PULL = "up"  # "up", "down" or None (an external resistor)
# A pulse and the gap after it must each last longer than this; 5 ms allows up to 100 pulses/s.
DEBOUNCE_MS = 5
# "irq": an interrupt on every edge (hardware-timed). "poll": the portable fallback, every pin
# sampled once a millisecond by a timer, for ports or pins without edge interrupts.
COUNT_MODE = "irq"

# The machine's state input (running), read as discrete input 0; None if not wired.
STATE_PIN = 14
STATE_DEBOUNCE_MS = 20

# Outputs switched by the gateway through coils 0.. (a stack light's relays); () for none.
OUTPUT_PINS = (16, 17, 18, 19)

# Held to ground at power-up (a jumper to GND): the firmware does not start and the REPL stays
# free for mpremote. Needed with SERIAL = "usb", where the firmware owns the USB port.
MAINTENANCE_PIN = 22

# The hardware watchdog restarts a hung board (the gateway sees the counters restart at 0 and
# the boot count go up). At most 8388 ms on the RP2040; 0 turns it off.
WATCHDOG_MS = 5000

# A file on the board's flash holding the boot count; written once per start (flash wear).
BOOT_COUNT_FILE = "boot_count.txt"
