//! Unit tests of the pipeline stages on `proc_macro2` tokens.

use crate::{ast, check, expand, fuse, lower};
use quote::quote;

fn item(ts: proc_macro2::TokenStream) -> syn::ItemFn {
    syn::parse2(ts).expect("test kernel parses as a function")
}

#[test]
fn dump_softmax() {
    let f = item(quote! {
        fn softmax_rows(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
            let e = exp(x - x.max(-1));
            e / e.sum(-1)
        }
    });
    let k = ast::parse(&f).unwrap();
    let g = check::check(&k).unwrap();
    let fz = fuse::fuse(&g);
    let ir = lower::lower(&g, &fz);
    eprintln!("{fz:#?}\n{ir:#?}");
    let out = expand::kernel(quote!(), quote!(#f));
    eprintln!("{out}");
}
