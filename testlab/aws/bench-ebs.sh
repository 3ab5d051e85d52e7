#!/bin/bash
# The seed's examples/seed/aws.json on the lab: kiln vs Packer 1.6.6, wall
# time, alternating order, medians. Harmless stand-ins for the seed's
# scripts ("the instance" is this machine). Each tool builds in a region of
# its own (a VPC and subnet 127.0.3.0/24 each: SSH reaches "the instance"),
# straight to moto (no fault proxy). Each AMI made is deregistered after.
#
#   bash testlab/aws/with-lab.sh /tmp/kiln-awslab bash testlab/aws/bench-ebs.sh [ROUNDS]
#
# Needs KILN_AWS_LAB (with-lab.sh sets it), `kiln` built (target/debug or
# KILN=path), `packer` on PATH. At most 16 rounds per lab (addresses).
set -euo pipefail
ROUNDS=${1:-5}
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/../.." && pwd)
LAB=${KILN_AWS_LAB:?run through testlab/aws/with-lab.sh}
KILN=${KILN:-$REPO/target/debug/kiln}
EP=$(python3 -c "import json;print(json.load(open('$LAB/lab.json'))['endpoint'])")
export AWS_ACCESS_KEY_ID=kiln-lab AWS_SECRET_ACCESS_KEY=kiln-lab-secret AWS_EC2_METADATA_DISABLED=true CHECKPOINT_DISABLE=1
AWS="$LAB/venv/bin/aws --endpoint-url $EP ec2"
W=$(mktemp -d /tmp/kiln-bench-ebs.XXXXXX); trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
chmod 755 "$W"; cp -r "$REPO/testlab/openstack/seed/scripts" "$REPO/testlab/openstack/seed/data" "$W/"
printf '#!/bin/bash\necho "prepare_data.sh: running as $(id -un)"\n' > "$W/scripts/prepare_data.sh"
cp "$REPO/examples/seed/aws.json" "$W/"; mkdir -m 777 "$W/stash"
declare -A SUB
for pair in kiln:ap-southeast-1 packer:ca-central-1; do
  tool=${pair%%:*}; region=${pair#*:}
  vpc=$(AWS_DEFAULT_REGION=$region $AWS create-vpc --cidr-block 127.0.3.0/24 --query Vpc.VpcId --output text)
  SUB[$tool]=$(AWS_DEFAULT_REGION=$region $AWS create-subnet --vpc-id "$vpc" --cidr-block 127.0.3.0/24 --query Subnet.SubnetId --output text)
done
run() { # tool region -> seconds
  local tool=$1 region=$2 bin t0 t1
  [ "$tool" = kiln ] && bin=$KILN || bin=packer
  t0=$(date +%s.%N)
  (cd "$W" && "$bin" build -color=false \
    -var region="$region" -var custom_endpoint_ec2="$EP" -var subnet_id="${SUB[$tool]}" \
    -var ssh_interface=private_ip -var ssh_username=kiln-ec2 -var source_ami_name='lab/base-*' \
    -var stash="$W/stash" aws.json > "$W/$tool.log" 2>&1) || { echo "$tool failed:"; tail -20 "$W/$tool.log"; exit 1; }
  t1=$(date +%s.%N)
  for ami in $(AWS_DEFAULT_REGION=$region $AWS describe-images --owners self --query 'Images[].ImageId' --output text); do
    AWS_DEFAULT_REGION=$region $AWS deregister-image --image-id "$ami" >/dev/null
  done
  echo "$t1 - $t0" | bc
}
K=(); P=()
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then K+=("$(run kiln ap-southeast-1)"); P+=("$(run packer ca-central-1)")
  else P+=("$(run packer ca-central-1)"); K+=("$(run kiln ap-southeast-1)"); fi
  echo "round $i: kiln ${K[-1]} s, packer ${P[-1]} s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mk=$(median "${K[@]}"); mp=$(median "${P[@]}")
echo "medians over $ROUNDS rounds: kiln $mk s, Packer 1.6.6 $mp s, ratio $(echo "scale=2; $mk / $mp" | bc)"
