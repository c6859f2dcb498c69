//! `lookup`: resolves a name through Maxine's DNS with hickory-resolver, as
//! any client would, and prints the records.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
pub struct LookupArgs {
    /// Name to resolve, e.g. payments.maxine or _payments._tcp.maxine
    name: String,
    /// Record type [default: A]
    #[arg(default_value = "A")]
    rtype: String,
    /// DNS server [env: MAXINE_DNS]
    #[arg(long, env = "MAXINE_DNS", default_value = "127.0.0.1:8600")]
    dns: SocketAddr,
    /// Use TCP instead of UDP
    #[arg(long)]
    tcp: bool,
}

pub async fn lookup(a: LookupArgs) -> anyhow::Result<()> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::RecordType;

    let rtype: RecordType = a
        .rtype
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("unknown record type {:?}", a.rtype))?;
    let mut conn = if a.tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = a.dns.port();
    let mut ns = NameServerConfig::udp(a.dns.ip());
    ns.connections = vec![conn];
    let mut builder = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().cache_size = 0;
    let resolver = builder.build()?;
    let name = if a.name.ends_with('.') {
        a.name.clone()
    } else {
        format!("{}.", a.name)
    };
    match resolver.lookup(name.as_str(), rtype).await {
        Ok(lookup) => {
            for r in lookup.answers() {
                println!("{r}");
            }
            for r in lookup.additionals() {
                println!("{r} ; additional");
            }
            Ok(())
        }
        Err(e) => bail!("{name} {rtype}: {e}"),
    }
}
