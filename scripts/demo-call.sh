#!/usr/bin/env bash
# Place one call to the demo number of a running `make run` with SIPp,
# show the RTP the edge sent back to SIPp (the echo), and the call's CDR.
#   SIP=127.0.0.1:5060 NUMBER=+15550100 DURATION_MS=5000 scripts/demo-call.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIP=${SIP:-127.0.0.1:5060}
NUMBER=${NUMBER:-+15550100}
DURATION_MS=${DURATION_MS:-5000}
MEDIA_PORT=${MEDIA_PORT:-16000}
DB=${DB:-data/trunkgate.db}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

capture=""
if command -v tshark >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	secs=$(( DURATION_MS / 1000 + 4 ))
	timeout $(( secs + 5 )) tshark -i lo -f "udp dst port $MEDIA_PORT" -a duration:$secs -w "$work/echo.pcap" -q >/dev/null 2>&1 &
	capture=$!
	sleep 1
fi

echo "Calling $NUMBER at $SIP for $(( DURATION_MS / 1000 )) s (SIPp plays g711a.pcap, then presses 5)..."
timeout $(( DURATION_MS / 1000 + 30 )) sipp "$SIP" -sf testdata/sipp/uac_demo.xml -s "$NUMBER" -m 1 \
	-i 127.0.0.1 -mi 127.0.0.1 -mp "$MEDIA_PORT" -d "$DURATION_MS" -nostdin \
	-trace_err -error_file "$work/errors.log" >"$work/sipp.out" 2>&1 && rc=0 || rc=$?
if [ "$rc" != 0 ]; then
	echo "SIPp failed (exit $rc): is 'make run' up at $SIP?"; cat "$work/errors.log" 2>/dev/null | tail -5
	exit "$rc"
fi
echo "SIPp: call completed (INVITE → 200 → ACK → audio → BYE → 200)."

if [ -n "$capture" ]; then
	wait "$capture" || true
	echo
	echo "RTP the edge sent back to SIPp's media port $MEDIA_PORT (the demo app's echo):"
	tshark -r "$work/echo.pcap" -d "udp.port==$MEDIA_PORT,rtp" -q -z rtp,streams 2>/dev/null | sed -n '/Src IP/,$p'
else
	echo "(Install tshark and run as root to see the RTP that came back to SIPp.)"
fi
echo
echo "The call's record:"
./bin/trunkgate cdrs --db "$DB" --limit 1
