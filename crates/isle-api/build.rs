//! Compiles the etcd v3 API's .proto files (proto/etcd) with `protox` — pure Rust, so the build
//! needs no `protoc` — and generates prost messages plus tonic servers and clients from them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "proto/etcd";
    let files = [
        "mvccpb/kv.proto",
        "etcdserverpb/rpc.proto",
        "v3lockpb/v3lock.proto",
        "v3electionpb/v3election.proto",
    ];
    let descriptors = protox::compile(files, [root])?;
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
