# Drawn by tiercache-bench; run `gnuplot plots.gp` here to redraw.
set datafile separator whitespace
set grid ytics
set key outside right top
do for [fmt in "svg png"] {
  if (fmt eq "svg") { set terminal svg size 900,500 dynamic noenhanced } else { set terminal pngcairo size 900,500 noenhanced }
  set output "throughput.".fmt
  set title "Throughput per configuration (median; bars: min-max of repeats)"
  set ylabel "requests/s"
  set style data histogram
  set style histogram errorbars gap 1 lw 1
  set style fill solid 0.6 border -1
  set xtics rotate by -30
  set logscale y
  set yrange [*:*]
  plot "throughput.dat" using 2:3:4:xtic(1) title "requests/s (log scale)"
  unset logscale y
  set output "tier_share.".fmt
  set title "Share of gets served by each tier"
  set ylabel "fraction of gets"
  set style histogram rowstacked
  set yrange [0:1]
  plot "tier_share.dat" using 2:xtic(1) title "L1", "tier_share.dat" using 3 title "L2", "tier_share.dat" using 4 title "L3", "tier_share.dat" using 10 title "miss"
  set output "latency_cdf.".fmt
  set title "Get latency CDF (all repeats)"
  set style data lines
  set xtics norotate
  set logscale x
  set xlabel "latency (us)"
  set ylabel "fraction of gets"
  set yrange [0:1]
  plot "latency_cdf.dat" index 0 using 1:2 with steps title "shm/zipf-prefilled", "latency_cdf.dat" index 1 using 1:2 with steps title "shm/zipf-cold-open-2k", "latency_cdf.dat" index 2 using 1:2 with steps title "shm+lmdb/zipf-prefilled", "latency_cdf.dat" index 3 using 1:2 with steps title "shm+lmdb/zipf-cold-open-2k", "latency_cdf.dat" index 4 using 1:2 with steps title "shm+lmdb+redis/zipf-prefilled", "latency_cdf.dat" index 5 using 1:2 with steps title "shm+lmdb+redis/zipf-cold-open-2k"
  unset logscale x
  set output "mrc.".fmt
  set title "Miss ratio by cache size: exact LRU and FIFO, and each stack's L1"
  set xlabel "cache size (MiB)"
  set ylabel "miss ratio"
  set yrange [0:1]
  set xrange [0:*]
  set key inside right top
  plot "mrc.dat" index 0 using 1:2 with linespoints title "LRU", "mrc.dat" index 1 using 1:2 with linespoints title "FIFO", "mrc_stacks.dat" index 0 using 1:2 with points pt 4 ps 1.5 title "L1 of shm/zipf-prefilled", "mrc_stacks.dat" index 1 using 1:2 with points pt 5 ps 1.5 title "L1 of shm+lmdb/zipf-prefilled", "mrc_stacks.dat" index 2 using 1:2 with points pt 6 ps 1.5 title "L1 of shm+lmdb+redis/zipf-prefilled"
  unset xrange
  set key outside right top
  unset xlabel
}
