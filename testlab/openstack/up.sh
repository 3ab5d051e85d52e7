#!/bin/bash
# kiln's OpenStack test lab: real Keystone, Glance, Placement, Nova (fake
# hypervisor), Neutron (ML2, no agents), RabbitMQ and MariaDB, all on
# 127.0.0.1, set up the way the seed's cloud looks to its user.
#
#   bash testlab/openstack/up.sh ROOT    # see README.md for how long it takes
#   . ROOT/seedrc                        # the seed-style OS_* variables (non-admin user jb23)
#   bash testlab/openstack/down.sh ROOT  # stops every process this started
#
# Needs root (apt-get, a user `ubuntu`, sshd on 127.0.0.10-20:22). Installs
# the Debian packages it needs when they are missing, and its own pip venv
# (pinned in requirements.lock) under ROOT/venv.
#
# Adapted from a recipe verified on this kind of machine; every non-default
# piece is explained in README.md next to this file.
set -euo pipefail
R=${1:?usage: up.sh ROOT}
mkdir -p "$R"; R=$(cd "$R" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
t0=$SECONDS; ts(){ echo "[lab $((SECONDS-t0))s] $*"; }
export PYTHONWARNINGS=ignore

if [ -f "$R/ready" ] && curl -sf -o /dev/null http://127.0.0.1:5000/v3 && curl -s -o /dev/null http://127.0.0.1:8774/; then
  ts "already up ($R)"; exit 0
fi
rm -f "$R/ready"
mkdir -p $R/{etc/keystone,etc/glance,etc/placement,etc/nova,etc/neutron/plugins/ml2,data/images,data/glance-staging,data/glance-tasks,data/nova/instances,data/nova/lock,data/neutron/lock,data/rabbitmq,log,run,ssh}

# ---- Debian packages
need=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v mariadbd >/dev/null || need+=(mariadb-server)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sudo >/dev/null || need+=(sudo)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v curl >/dev/null || need+=(curl)
PY=${LAB_PYTHON:-python3}
$PY -c 'import venv, ensurepip' 2>/dev/null || { PY=/usr/bin/python3; [ -x $PY ] && $PY -c 'import ensurepip' 2>/dev/null || need+=(python3-venv python3-dev); }
if [ ${#need[@]} -gt 0 ]; then
  ts "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" build-essential >/dev/null
  PY=${LAB_PYTHON:-python3}; $PY -c 'import venv, ensurepip' 2>/dev/null || PY=/usr/bin/python3
fi

# ---- rabbitmq (loopback only)
cat > $R/rabbitenv <<EOF
export HOME=$R/data/rabbitmq RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_MNESIA_BASE=$R/data/rabbitmq/mnesia RABBITMQ_LOG_BASE=$R/data/rabbitmq/log RABBITMQ_ENABLED_PLUGINS_FILE=$R/data/rabbitmq/enabled_plugins RABBITMQ_CONFIG_FILE=$R/data/rabbitmq/rabbitmq
EOF
echo "[]." > $R/data/rabbitmq/enabled_plugins
( . $R/rabbitenv; nohup /usr/lib/rabbitmq/bin/rabbitmq-server > $R/log/rabbitmq.log 2>&1 & echo $! > $R/run/rabbitmq.pid )
ts "rabbitmq starting"

# ---- MariaDB (loopback only): sqlite made Nova fail one snapshot in three
mkdir -p $R/data/mysql
[ -d $R/data/mysql/mysql ] || mariadb-install-db --user=root --datadir=$R/data/mysql --auth-root-authentication-method=normal >$R/log/mariadb-install.log 2>&1
( nohup mariadbd --user=root --datadir=$R/data/mysql --bind-address=127.0.0.1 --port=3306 --socket=$R/run/mysqld.sock \
  --pid-file=$R/run/mariadb.pid --skip-name-resolve --max-connections=500 --innodb-buffer-pool-size=128M > $R/log/mariadb.log 2>&1 & )
for i in $(seq 1 60); do mariadb --socket=$R/run/mysqld.sock -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
for db in keystone glance placement nova_api nova nova_cell0 neutron; do
  mariadb --socket=$R/run/mysqld.sock -uroot -e "CREATE DATABASE IF NOT EXISTS $db CHARACTER SET utf8mb4"; done
mariadb --socket=$R/run/mysqld.sock -uroot -e "CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY 'secret'; GRANT ALL ON *.* TO 'os'@'127.0.0.1'"
ts "mariadb up"

# ---- python venv (pinned)
if [ ! -x $R/venv/bin/uwsgi ] || [ ! -f $R/venv/.kiln-lab-ok ]; then
  rm -rf $R/venv
  $PY -m venv $R/venv
  $R/venv/bin/pip install -q ${PIP_OPTS:-} -r $HERE/requirements.lock PyMySQL
  rm -rf $R/ext-src; cp -r $HERE/ext $R/ext-src; $R/venv/bin/pip install -q $R/ext-src
  cp $HERE/ext/lab_fakevirt.py $R/venv/lib/python3*/site-packages/nova/virt/
  touch $R/venv/.kiln-lab-ok
fi
ts "venv ready"
export PATH=$R/venv/bin:$PATH
cp $R/venv/etc/glance/glance-api-paste.ini $R/etc/glance/
cp $R/venv/etc/nova/api-paste.ini $R/etc/nova/; cp $R/venv/etc/neutron/api-paste.ini $R/etc/neutron/
authtoken(){ cat <<EOF
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
auth_url = http://127.0.0.1:5000
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = secret
EOF
}
svcauth(){ cat <<EOF
[$1]
region_name = RegionOne
auth_type = password
auth_url = http://127.0.0.1:5000/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = secret
EOF
}
POL=$'[oslo_policy]\nenforce_new_defaults = false\nenforce_scope = false'
cat > $R/etc/keystone/keystone.conf <<EOF
[DEFAULT]
log_file = $R/log/keystone.log
[database]
connection = mysql+pymysql://os:secret@127.0.0.1/keystone
[token]
provider = fernet
expiration = ${LAB_TOKEN_EXPIRATION:-3600}
[fernet_tokens]
key_repository = $R/data/fernet-keys
[fernet_receipts]
key_repository = $R/data/fernet-keys
[credential]
key_repository = $R/data/credential-keys
EOF
cat > $R/etc/glance/glance-api.conf <<EOF
[DEFAULT]
log_file = $R/log/glance-api.log
enabled_backends = fs:file
worker_self_reference_url = http://127.0.0.1:9292
[database]
connection = mysql+pymysql://os:secret@127.0.0.1/glance
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $R/data/images
[os_glance_staging_store]
filesystem_store_datadir = $R/data/glance-staging
[os_glance_tasks_store]
filesystem_store_datadir = $R/data/glance-tasks
[paste_deploy]
flavor = keystone
$(authtoken glance)
$POL
EOF
cat > $R/etc/placement/placement.conf <<EOF
[DEFAULT]
log_file = $R/log/placement.log
[placement_database]
connection = mysql+pymysql://os:secret@127.0.0.1/placement
[api]
auth_strategy = keystone
$(authtoken placement)
$POL
EOF
cat > $R/etc/nova/nova.conf <<EOF
[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/
compute_driver = lab_fakevirt.UploadingFakeDriver
state_path = $R/data/nova
instances_path = $R/data/nova/instances
host = fakehost
my_ip = 127.0.0.1
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $R/etc/nova/api-paste.ini
[api_database]
connection = mysql+pymysql://os:secret@127.0.0.1/nova_api
[database]
connection = mysql+pymysql://os:secret@127.0.0.1/nova
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 5
[vnc]
enabled = false
[oslo_concurrency]
lock_path = $R/data/nova/lock
$(authtoken nova)
$(svcauth service_user nova)
send_service_user_token = true
$(svcauth placement placement)
$(svcauth neutron neutron)
[glance]
region_name = RegionOne
$POL
EOF
cat > $R/etc/neutron/neutron.conf <<EOF
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
api_paste_config = $R/etc/neutron/api-paste.ini
transport_url = rabbit://guest:guest@127.0.0.1:5672/
state_path = $R/data/neutron
log_file = $R/log/neutron-server.log
[database]
connection = mysql+pymysql://os:secret@127.0.0.1/neutron
[oslo_concurrency]
lock_path = $R/data/neutron/lock
$(authtoken neutron)
$(svcauth nova nova)
$POL
EOF
cat > $R/etc/neutron/plugins/ml2/ml2_conf.ini <<EOF
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers = alwaysbind
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vxlan]
vni_ranges = 1:1000
EOF

# ---- schemas (in parallel; skipped when already there)
K="--config-file $R/etc/keystone/keystone.conf"
N="--config-file $R/etc/nova/nova.conf"
if [ ! -f $R/data/schemas-done ]; then
( keystone-manage $K db_sync && keystone-manage $K fernet_setup --keystone-user root --keystone-group root && keystone-manage $K credential_setup --keystone-user root --keystone-group root && keystone-manage $K bootstrap --bootstrap-password secret --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-public-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ --bootstrap-region-id RegionOne ) > $R/log/setup-keystone.log 2>&1 &
( glance-manage --config-file $R/etc/glance/glance-api.conf db_sync && placement-manage --config-file $R/etc/placement/placement.conf db sync ) > $R/log/setup-glance-placement.log 2>&1 &
( nova-manage $N api_db sync && nova-manage $N cell_v2 map_cell0 --database_connection mysql+pymysql://os:secret@127.0.0.1/nova_cell0 && nova-manage $N cell_v2 create_cell --name=cell1 && nova-manage $N db sync ) > $R/log/setup-nova.log 2>&1 &
( python -c "
import sqlalchemy as sa
from neutron.db.migration.models import head
head.get_metadata().create_all(sa.create_engine('mysql+pymysql://os:secret@127.0.0.1/neutron'))" && neutron-db-manage --config-file $R/etc/neutron/neutron.conf stamp heads ) > $R/log/setup-neutron.log 2>&1 &
fail=0; for j in $(jobs -p); do wait $j || fail=1; done
[ $fail = 0 ] || { echo "schema setup failed, see $R/log/setup-*.log" >&2; exit 1; }
touch $R/data/schemas-done
fi
ts "db schemas done"

# ---- APIs under uwsgi: chunked uploads need --chunked-input-limit; Connection: close avoids random resets
api(){ # NAME PORT MODULE ENV
  nohup uwsgi --http-socket 127.0.0.1:$2 --add-header "Connection: close" --chunked-input-limit 268435456 --buffer-size 65535 \
    --master --processes 1 --threads 4 --lazy-apps --die-on-term --need-app --module $3 --env $4 --pidfile $R/run/$1.pid \
    --logformat "%(ltime) %(method) %(uri) => %(status) ua=\"%(uagent)\"" > $R/log/$1-uwsgi.log 2>&1 &
}
waitport(){ for i in $(seq 1 240); do curl -s -o /dev/null http://127.0.0.1:$1/ && return 0; sleep 0.5; done; echo "port $1 not up" >&2; return 1; }
api keystone 5000 keystone.wsgi.api:application OS_KEYSTONE_CONFIG_DIR=$R/etc/keystone
api glance 9292 glance.wsgi.api:application OS_GLANCE_CONFIG_DIR=$R/etc/glance
api placement 8778 placement.wsgi.api:application OS_PLACEMENT_CONFIG_DIR=$R/etc/placement
api nova-api 8774 nova.wsgi.osapi_compute:application OS_NOVA_CONFIG_DIR=$R/etc/nova
api neutron 9696 neutron.wsgi.api:application OS_NEUTRON_CONFIG_DIR=$R/etc/neutron
# a second Keystone API (same database, same fernet keys) whose tokens live
# LAB_SHORT_TOKEN_EXPIRATION seconds: the token-renewal test builds through it
SHORT=${LAB_SHORT_TOKEN_EXPIRATION:-20}
mkdir -p $R/etc/keystone-short
sed -e "s|^expiration = .*|expiration = $SHORT|" -e "s|^log_file = .*|log_file = $R/log/keystone-short.log|" \
  $R/etc/keystone/keystone.conf > $R/etc/keystone-short/keystone.conf
api keystone-short 5001 keystone.wsgi.api:application OS_KEYSTONE_CONFIG_DIR=$R/etc/keystone-short
echo "{\"port\": 5001, \"token_expiration\": $SHORT}" > $R/short-keystone.json
for p in 5000 5001 9292 8778 8774 9696; do waitport $p; done
ts "APIs up"
cat > $R/adminrc <<EOF
export PATH=$R/venv/bin:\$PATH PYTHONWARNINGS=ignore OS_AUTH_URL=http://127.0.0.1:5000/v3 OS_IDENTITY_API_VERSION=3 OS_USERNAME=admin OS_PASSWORD=secret OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_REGION_NAME=RegionOne OS_INTERFACE=public
EOF
. $R/adminrc
[ -f $R/data/catalog-done ] || { python $HERE/bootstrap_keystone.py && touch $R/data/catalog-done; }
ts "keystone catalog done"
for (( i=0; i<90; i++ )); do (. $R/rabbitenv; /usr/lib/rabbitmq/bin/rabbitmqctl -q await_startup >/dev/null 2>&1) && break; sleep 1; done
ts "rabbitmq up"
for s in conductor scheduler compute; do nohup nova-$s $N --log-file $R/log/nova-$s.log > $R/log/nova-$s.out 2>&1 & echo $! > $R/run/nova-$s.pid; done

# ---- "the instance": an sshd on the floating-IP addresses, port 22, for user
# ubuntu (passwordless sudo), whose AuthorizedKeysCommand prints the public
# keys of Nova's key pairs: the stand-in for cloud-init injecting the key.
id ubuntu >/dev/null 2>&1 || useradd -m -s /bin/bash ubuntu
usermod -p '*' ubuntu   # not locked ('!'), or sshd without PAM refuses it
echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/kiln-testlab; chmod 440 /etc/sudoers.d/kiln-testlab
mkdir -p /stash; chown ubuntu: /stash   # the seed's file provisioner writes /stash
# sshd insists the command's directory chain is root-owned and not writable by others (so not under /tmp)
install -d -m 755 /usr/local/lib/kiln-testlab
cat > /usr/local/lib/kiln-testlab/nova-keys <<'EOF'
#!/bin/sh
# usage: nova-keys MYSQL_SOCKET -- every Nova key pair's public key, one a line
exec mariadb --socket="$1" -uroot -N -B -r -e 'select public_key from nova_api.key_pairs'
EOF
chmod 755 /usr/local/lib/kiln-testlab/nova-keys
[ -f $R/ssh/hostkey ] || ssh-keygen -q -t ed25519 -N "" -f $R/ssh/hostkey
[ -f $R/ssh/id_test ] || ssh-keygen -q -t ed25519 -N "" -f $R/ssh/id_test
{ echo "Port ${LAB_SSH_PORT:-22}"; for i in $(seq 10 20); do echo "ListenAddress 127.0.0.$i"; done
  printf '%s\n' "HostKey $R/ssh/hostkey" "PidFile $R/run/sshd.pid" "AuthorizedKeysFile none" \
    "AuthorizedKeysCommand /usr/local/lib/kiln-testlab/nova-keys $R/run/mysqld.sock" "AuthorizedKeysCommandUser root" \
    "AllowUsers ubuntu" "PasswordAuthentication no" "KbdInteractiveAuthentication no" "UsePAM no" "UseDNS no" \
    "MaxStartups 100:30:200" "Subsystem sftp internal-sftp"; } > $R/ssh/sshd_config
mkdir -p /run/sshd; /usr/sbin/sshd -f $R/ssh/sshd_config -E $R/log/sshd.log

python $HERE/bootstrap_seed.py $R
# seed-style rc file (the seed's names; Keystone v3 because current Keystone has no v2.0)
cat > $R/seedrc <<EOF
export OS_NO_CACHE=True
export COMPUTE_API_VERSION=1.1
export OS_USERNAME=jb23
export no_proxy=,127.0.0.1
export OS_TENANT_NAME=jb23
export OS_CLOUDNAME=overcloud
export OS_AUTH_URL=http://127.0.0.1:5000/v3/
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export NOVA_VERSION=1.1
export OS_PASSWORD=not_my_password
EOF
mkdir -p $R/config
cat > $R/config/clouds.yaml <<EOF
clouds:
  lab:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: jb23
      password: not_my_password
      project_name: jb23
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
EOF
echo "KILN_OPENSTACK_LAB=$R" > $R/lab.env
touch $R/ready
ts "lab ready: . $R/seedrc"
