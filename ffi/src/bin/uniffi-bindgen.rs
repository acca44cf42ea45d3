//! UniFFI's binding generator, at the version this workspace pins.

fn main() {
    uniffi::uniffi_bindgen_main()
}
