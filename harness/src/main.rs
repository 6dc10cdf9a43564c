use rewind_harness::*;
fn main() {
    let kit = kit::Kit::ensure().unwrap();
    print!("{}", kit.describe());
    let mut g = QemuGuest::new(GuestConfig::new("smoke").keep(true)).unwrap();
    let r = g.boot(&BootPlan::raw()).unwrap();
    println!("{r:?}");
    println!("{:?}", g.exec("uname -a; ls -la /dev/block/by-name; df -h /data; cat /proc/mounts"));
    println!("{:?}", g.shutdown());
}
