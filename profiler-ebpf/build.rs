fn main() {
    if let Err(err) = aya_build::emit_bpf_target_arch_cfg() {
        println!("cargo::error=cannot tell the BPF target architecture: {err}");
    }
}
