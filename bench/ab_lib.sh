# Shared by ab_e2e.sh and ab_files.sh (sourced): a number from moe_infer's --json output,
# and the median of numbers on stdin, one per line.
field() { sed -E "s/.*\"$1\": ([0-9.]+).*/\\1/" "$2"; }
med() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
