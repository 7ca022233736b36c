//! Who the simulated devices are: device `i` sends from loopback address
//! [`FIRST_DEVICE_IP`] + i, has ICCID [`FIRST_ICCID`] + i and, for CoAPS,
//! the PSK [`device_psk`]`(i)` or one common key. [`device_config`] and
//! [`dtls_device_config`] print the matching coapgate `[[device]]` blocks.

use std::net::Ipv4Addr;

use crate::LoadError;

/// The address of device 0; device `i` is this address plus `i`.
pub const FIRST_DEVICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The ICCID of device 0; device `i` has this number plus `i`.
pub const FIRST_ICCID: u64 = 8_988_280_666_000_000_000;

/// The source address of device `index` (counting from 0).
pub fn device_ip(index: usize) -> Result<Ipv4Addr, LoadError> {
    u32::try_from(index)
        .ok()
        .and_then(|i| u32::from(FIRST_DEVICE_IP).checked_add(i))
        .map(Ipv4Addr::from)
        .filter(|ip| ip.is_loopback())
        .ok_or(LoadError::DeviceAddress { index })
}

/// The ICCID of device `index` (counting from 0).
pub fn device_iccid(index: usize) -> String {
    (FIRST_ICCID + index as u64).to_string()
}

/// The PSK (text) of device `index` when no common key is given:
/// `coapgate-load-` and its ICCID.
pub fn device_psk(index: usize) -> String {
    format!("coapgate-load-{}", device_iccid(index))
}

/// The key device `index` uses: `psk` when given (one key for all), else
/// [`device_psk`]`(index)`.
pub(crate) fn key_of(psk: Option<&str>, index: usize) -> String {
    psk.map_or_else(|| device_psk(index), str::to_owned)
}

/// coapgate `[[device]]` TOML blocks for devices `0..devices`: ICCID
/// [`FIRST_ICCID`] + i at [`FIRST_DEVICE_IP`] + i.
pub fn device_config(devices: usize) -> Result<String, LoadError> {
    config_blocks(devices, |_| None)
}

/// Like [`device_config`], each block with the device's PSK for CoAPS:
/// `psk` when given (one key for all), else [`device_psk`]`(i)`.
pub fn dtls_device_config(devices: usize, psk: Option<&str>) -> Result<String, LoadError> {
    config_blocks(devices, |index| Some(key_of(psk, index)))
}

/// The `[[device]]` blocks, with `psk = …` where `psk_of` gives one.
fn config_blocks(
    devices: usize,
    psk_of: impl Fn(usize) -> Option<String>,
) -> Result<String, LoadError> {
    let mut text = String::new();
    for index in 0..devices {
        text.push_str(&format!(
            "[[device]]\niccid = \"{}\"\nip = \"{}\"\n",
            device_iccid(index),
            device_ip(index)?
        ));
        if let Some(psk) = psk_of(index) {
            text.push_str(&format!("psk = {}\n", toml_string(&psk)));
        }
    }
    Ok(text)
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_count_up_from_127_0_0_2() {
        assert_eq!(device_ip(0).unwrap(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(device_ip(254).unwrap(), Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(
            device_ip(16_777_213).unwrap(),
            Ipv4Addr::new(127, 255, 255, 255)
        );
        assert!(device_ip(16_777_214).is_err());
        assert!(device_ip(usize::MAX).is_err());
        assert_eq!(device_iccid(3), "8988280666000000003");
        let toml = device_config(2).unwrap();
        assert_eq!(
            toml,
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n\
             [[device]]\niccid = \"8988280666000000001\"\nip = \"127.0.0.3\"\n"
        );
    }

    #[test]
    fn dtls_blocks_carry_each_key() {
        assert_eq!(
            dtls_device_config(2, None).unwrap(),
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n\
             psk = \"coapgate-load-8988280666000000000\"\n\
             [[device]]\niccid = \"8988280666000000001\"\nip = \"127.0.0.3\"\n\
             psk = \"coapgate-load-8988280666000000001\"\n"
        );
        assert_eq!(
            dtls_device_config(1, Some("a\"b")).unwrap(),
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"a\\\"b\"\n"
        );
    }

    #[test]
    fn keys_and_toml_strings() {
        assert_eq!(device_psk(1), "coapgate-load-8988280666000000001");
        assert_eq!(key_of(Some("k"), 1), "k");
        assert_eq!(key_of(None, 1), device_psk(1));
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_string("x\ny"), "\"x\\u000Ay\"");
    }
}
