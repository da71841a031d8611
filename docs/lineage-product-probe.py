# Checkpoint/restore cost over a long chain, through the product (SDK + daemon):
#   python3 docs/lineage-product-probe.py 300 chain   # every checkpoint kept
#   python3 docs/lineage-product-probe.py 300 keep5   # only the last 5 kept (a keep-rule)
# Each cycle: change the 76 MB REPL, checkpoint, restore that checkpoint (the shell
# becomes a fork of the newest template). Measured here (2-core VM, 2026-11-25), daemon
# side ms, median of 10 around each point:
#   chain: cycle 0: 4.4/5.3 ms (checkpoint/restore), 10: 6.3/7.5, 50: 12/18, 100: 26/34,
#          200: 67/66, 299: 115/104
#   keep5: cycle 0: 4.4/6.0, 50: 5.3/6.1, 100: 3.7/4.3, 200: 4.4/5.3, 299: 5.0/5.6 (flat)
# With re-rooting in idle time (2026-11-26; a third argument gives think time in ms after
# each restore, the idle moment init re-roots in):
#   python3 docs/lineage-product-probe.py 150 chain 50
#   re-rooting on:  cycle 0: 5.3/5.5 ms, 50: 4.6/5.2, 100: 4.4/5.9, 149: 5.1/5.3 (flat)
#   DELTABOX_REROOT=0 on the daemon: 0: 6.5/7.6, 50: 29/24, 100: 70/50, 149: 111/79
#   (the same hour, back to back; this VM ran ~2x slower than on 2026-11-24 then)
import sys, time, statistics
from deltabox import Client
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
mode = sys.argv[2] if len(sys.argv) > 2 else "chain"
# Think time after each restore (an agent's next LLM call): the sandbox's idle moments.
think = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
with Client() as c:
    box = c.create(shell="python")
    box.exec("import array, random\npad = [array.array('d', (random.random() for _ in range(1 << 16))) for _ in range(130)]")
    print("rss", box.exec("int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])//1024").stdout.strip(), "MB")
    cks, rss, hist = [], [], []
    for i in range(N):
        box.exec(f"pad[{i} % 130][0] = {i}")
        ck = box.checkpoint()
        if mode in ("chain", "keep5"):
            r = box.restore(ck)   # the shell becomes a fork of the newest template
            time.sleep(think)
        else:
            r = 0.0
        cks.append((ck.ms, r)); hist.append(ck)
        if mode == "keep5" and len(hist) > 5: hist.pop(0).remove()
    for a in (0, 10, 50, 100, 200, N - 1):
        if a < N:
            w = cks[max(0, a - 5):a + 5]
            print(f"depth~{a}: checkpoint {statistics.median(x for x,_ in w):.2f} ms, restore {statistics.median(y for _,y in w):.2f} ms")
