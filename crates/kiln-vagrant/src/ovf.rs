//! The OVF 1.0 descriptor of a VirtualBox box made from a disk image, in
//! the form VirtualBox itself exports (`VBoxManage export`): the standard
//! sections (disk, NAT network, CPU, memory, SATA controller, disk,
//! Ethernet adapter) plus VirtualBox's own `vbox:Machine` section, which
//! VirtualBox reads on import and where the first adapter's MAC address
//! lives (Vagrant's `config.vm.base_mac` must equal it).
use std::fmt::Write;

/// What the descriptor describes.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The machine's name (`VirtualSystem ovf:id`, `vbox:Machine name`).
    pub name: String,
    /// The VMDK's file name in the box.
    pub disk_file: String,
    /// The disk's guest-visible size in bytes.
    pub capacity: u64,
    /// 12 upper-case hex digits, no separators (VirtualBox's form).
    pub mac: String,
    pub memory_mb: u64,
    pub cpus: u32,
    /// VirtualBox OS type (e.g. `Debian_64`) and its CIM id (OVF).
    pub os_type: String,
    pub disk_uuid: String,
    pub machine_uuid: String,
}

/// A VirtualBox MAC address (its OUI 08:00:27, three random bytes).
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("080027{:02X}{:02X}{:02X}", b[0], b[1], b[2])
}

/// The CIM operating-system id OVF uses for a VirtualBox OS type.
pub fn cim_os_id(os_type: &str) -> u32 {
    match os_type {
        "Debian" => 95,
        "Debian_64" => 96,
        "Ubuntu" => 93,
        "Ubuntu_64" => 94,
        "RedHat" => 79,
        "RedHat_64" => 80,
        "Linux26" => 100,
        "Linux26_64" => 101,
        _ => 101,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The descriptor's text.
pub fn render(m: &Machine) -> String {
    let name = esc(&m.name);
    let file = esc(&m.disk_file);
    let os = esc(&m.os_type);
    let os_id = cim_os_id(&m.os_type);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="{file}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{cap}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="{disk_uuid}"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="{os_id}">
      <Info>The kind of installed guest operating system</Info>
      <Description>{os}</Description>
      <vbox:OSType ovf:required="false">{os}</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>{cpus} virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>{mem} MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{{{machine_uuid}}}" name="{name}" OSType="{os}" snapshotFolder="Snapshots">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware>
        <CPU count="{cpus}">
          <PAE enabled="true"/>
          <LongMode enabled="true"/>
          <X2APIC enabled="true"/>
          <HardwareVirtExLargePages enabled="true"/>
        </CPU>
        <Memory RAMSize="{mem}"/>
        <Boot>
          <Order position="1" device="HardDisk"/>
          <Order position="2" device="None"/>
          <Order position="3" device="None"/>
          <Order position="4" device="None"/>
        </Boot>
        <BIOS>
          <IOAPIC enabled="true"/>
        </BIOS>
        <Network>
          <Adapter slot="0" enabled="true" MACAddress="{mac}" type="82540EM">
            <NAT/>
          </Adapter>
        </Network>
        <AudioAdapter enabledIn="false" enabledOut="false"/>
      </Hardware>
      <StorageControllers>
        <StorageController name="SATA Controller" type="AHCI" PortCount="1" useHostIOCache="false" Bootable="true">
          <AttachedDevice type="HardDisk" hotpluggable="false" port="0" device="0">
            <Image uuid="{{{disk_uuid}}}"/>
          </AttachedDevice>
        </StorageController>
      </StorageControllers>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"#,
        cap = m.capacity,
        disk_uuid = m.disk_uuid,
        machine_uuid = m.machine_uuid,
        cpus = m.cpus,
        mem = m.memory_mb,
        mac = m.mac,
    );
    s
}

/// The MAC address of the adapter in slot 0, as Packer finds it in an OVF
/// (`<Adapter slot="0" ... MACAddress="..."`).
pub fn first_adapter_mac(ovf: &str) -> Option<String> {
    let mut rest = ovf;
    while let Some(i) = rest.find("<Adapter slot=\"0\"") {
        let tail = &rest[i..];
        let line_end = tail.find('\n').unwrap_or(tail.len());
        let line = &tail[..line_end];
        if let Some(j) = line.find("MACAddress=\"") {
            let v = &line[j + 12..];
            return v.find('"').map(|k| v[..k].to_string());
        }
        rest = &tail[1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            name: "web & db".into(),
            disk_file: "box-disk001.vmdk".into(),
            capacity: 2 << 30,
            mac: "080027ABCDEF".into(),
            memory_mb: 1024,
            cpus: 2,
            os_type: "Debian_64".into(),
            disk_uuid: "11111111-2222-3333-4444-555555555555".into(),
            machine_uuid: "66666666-2222-3333-4444-555555555555".into(),
        }
    }

    #[test]
    fn describes_the_disk_the_adapter_and_the_machine() {
        let x = render(&machine());
        assert!(x.contains(r#"ovf:href="box-disk001.vmdk""#));
        assert!(x.contains(r#"ovf:capacity="2147483648""#));
        assert!(x.contains(r#"<OperatingSystemSection ovf:id="96">"#));
        assert!(x.contains(r#"<VirtualSystem ovf:id="web &amp; db">"#));
        assert!(x.contains(r#"uuid="{66666666-2222-3333-4444-555555555555}""#));
        assert!(x.contains(r#"<Image uuid="{11111111-2222-3333-4444-555555555555}"/>"#));
        assert_eq!(first_adapter_mac(&x).as_deref(), Some("080027ABCDEF"));
    }

    #[test]
    fn finds_only_slot_zero() {
        let x = "<Adapter slot=\"1\" MACAddress=\"1\"/>\n<Adapter slot=\"0\" enabled=\"true\" MACAddress=\"0800270000AA\"/>";
        assert_eq!(first_adapter_mac(x).as_deref(), Some("0800270000AA"));
        assert_eq!(first_adapter_mac("<Adapter slot=\"1\"/>"), None);
    }

    #[test]
    fn macs_are_virtualbox_ones() {
        let m = random_mac();
        assert_eq!(m.len(), 12);
        assert!(m.starts_with("080027"));
        assert!(m
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }
}
