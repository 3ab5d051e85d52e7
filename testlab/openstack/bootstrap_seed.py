"""Make the lab look like the seed's cloud to the seed's user.

As admin: wait for nova-compute, map it to cell1, then create
- project and non-admin user `jb23` (role `member`), password `not_my_password`;
- flavors `m1.tiny` (id 1) and `m1.small` (id 2), as in the seed's flavor list;
- the public raw image `Ubuntu precise` with the seed's source_image id
  82b55c8c-cce1-4301-92c4-b005180531de (32 MiB: 4 MiB of data, then zeros);
- the external network `nova` (floating IPs 127.0.0.10-20);
- in jb23's project: network `private` (10.0.0.0/24), a router to `nova`,
  security group `ssh` (tcp 22 from anywhere);
- as jb23: key pair `testkey` (private key ROOT/ssh/id_test).
Idempotent: what exists is kept.
"""
import os
import sys
import subprocess
import time

import openstack

R = sys.argv[1]
SEED_IMAGE = '82b55c8c-cce1-4301-92c4-b005180531de'
c = openstack.connect()

for i in range(180):
    if any(s.binary == 'nova-compute' and s.state == 'up' for s in c.compute.services()):
        break
    time.sleep(1)
subprocess.run([f'{R}/venv/bin/nova-manage', '--config-file', f'{R}/etc/nova/nova.conf', 'cell_v2',
                'discover_hosts'], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for i in range(60):
    if list(c.compute.hypervisors()):
        break
    time.sleep(1)

idn = c.identity
proj = idn.find_project('jb23', domain_id='default') or idn.create_project(name='jb23', domain_id='default')
user = idn.find_user('jb23', domain_id='default') or idn.create_user(
    name='jb23', password='not_my_password', domain_id='default', default_project_id=proj.id)
idn.assign_project_role_to_user(proj, user, idn.find_role('member'))

for fid, name, ram, disk in (('1', 'm1.tiny', 512, 1), ('2', 'm1.small', 2048, 20)):
    if not c.compute.find_flavor(name):
        c.compute.create_flavor(id=fid, name=name, ram=ram, vcpus=1, disk=disk)

if not c.image.find_image(SEED_IMAGE):
    path = f'{R}/data/src.raw'
    with open(path, 'wb') as f:
        f.write(b'\xeb\x63\x90' + os.urandom((4 << 20) - 3))
        f.truncate(32 << 20)
    c.image.post('/images', json={'id': SEED_IMAGE, 'name': 'Ubuntu precise', 'disk_format': 'raw',
                                  'container_format': 'bare', 'visibility': 'public'}).raise_for_status()
    with open(path, 'rb') as f:
        c.image.put(f'/images/{SEED_IMAGE}/file', data=f,
                    headers={'Content-Type': 'application/octet-stream'}).raise_for_status()
    os.unlink(path)

net = c.network
ext = net.find_network('nova')
if not ext:
    ext = net.create_network(name='nova', is_router_external=True, provider_network_type='vxlan')
    net.create_subnet(network_id=ext.id, name='nova-subnet', ip_version=4, cidr='127.0.0.0/24',
                      gateway_ip='127.0.0.1', is_dhcp_enabled=False,
                      allocation_pools=[{'start': '127.0.0.10', 'end': '127.0.0.20'}])
priv = net.find_network('private', project_id=proj.id)
if not priv:
    priv = net.create_network(name='private', project_id=proj.id)
    psub = net.create_subnet(network_id=priv.id, name='private-subnet', ip_version=4, cidr='10.0.0.0/24',
                             project_id=proj.id)
    rtr = net.create_router(name='router1', project_id=proj.id, external_gateway_info={'network_id': ext.id})
    net.add_interface_to_router(rtr, subnet_id=psub.id)
if not net.find_security_group('ssh', project_id=proj.id):
    sg = net.create_security_group(name='ssh', description='Example ssh security group', project_id=proj.id)
    net.create_security_group_rule(security_group_id=sg.id, direction='ingress', protocol='tcp',
                                   port_range_min=22, port_range_max=22, remote_ip_prefix='0.0.0.0/0',
                                   ethertype='IPv4', project_id=proj.id)

u = openstack.connect(auth_url=os.environ['OS_AUTH_URL'], username='jb23', password='not_my_password',
                      project_name='jb23', user_domain_name='Default', project_domain_name='Default',
                      region_name='RegionOne')
if not u.compute.find_keypair('testkey'):
    with open(f'{R}/ssh/id_test.pub') as f:
        u.compute.create_keypair(name='testkey', public_key=f.read())
print('seed resources ready: user/project jb23, flavor m1.small, image "Ubuntu precise", '
      'networks private + external nova (127.0.0.10-20), security group ssh, keypair testkey')
