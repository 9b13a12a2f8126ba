# Shared by ab_e2e.sh, ab_files.sh and contention.sh (sourced): a number from moe_infer's --json output
# (nothing when the key is not there), and the median of numbers on stdin, one per line.
field() { sed -nE "s/.*\"$1\": ([0-9.]+).*/\\1/p" "$2"; }
med() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
