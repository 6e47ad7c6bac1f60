//! Symbolic shape arithmetic: broadcasting, equality and element counts of shapes whose
//! dimensions are literals, symbols and braced expressions.

use crate::ast::Dim;

/// A product of factors `coef * Π num / Π den`, the canonical form of a dimension used to
/// compare shapes (`H * {D / H}` equals `D`; `/` in a dimension is exact division, checked
/// when the kernel is called).
#[derive(Debug, PartialEq, Eq)]
struct Product {
    num_coef: u64,
    den_coef: u64,
    num: Vec<String>,
    den: Vec<String>,
}

impl Product {
    fn one() -> Product {
        Product {
            num_coef: 1,
            den_coef: 1,
            num: vec![],
            den: vec![],
        }
    }

    fn mul(&mut self, d: &Dim, invert: bool) {
        match d {
            Dim::Lit(n) => {
                let c = if invert {
                    &mut self.den_coef
                } else {
                    &mut self.num_coef
                };
                *c = c.saturating_mul(*n);
            }
            Dim::Expr(a, '*', b) => {
                self.mul(a, invert);
                self.mul(b, invert);
            }
            Dim::Expr(a, '/', b) => {
                self.mul(a, invert);
                self.mul(b, !invert);
            }
            other => {
                let s = other.to_string();
                if invert {
                    self.den.push(s)
                } else {
                    self.num.push(s)
                }
            }
        }
    }

    fn normalize(mut self) -> Product {
        let mut num = Vec::new();
        for f in self.num {
            if let Some(i) = self.den.iter().position(|d| *d == f) {
                self.den.remove(i);
            } else {
                num.push(f);
            }
        }
        num.sort();
        self.den.sort();
        let g = gcd(self.num_coef, self.den_coef).max(1);
        Product {
            num_coef: self.num_coef / g,
            den_coef: self.den_coef / g,
            num,
            den: self.den,
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn product(dims: &[Dim]) -> Product {
    let mut p = Product::one();
    for d in dims {
        p.mul(d, false);
    }
    p.normalize()
}

/// Two dimensions are provably equal.
pub fn same_dim(a: &Dim, b: &Dim) -> bool {
    a == b || product(std::slice::from_ref(a)) == product(std::slice::from_ref(b))
}

/// Two shapes are provably equal (same rank, each dimension equal).
pub fn same_shape(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_dim(x, y))
}

/// Two shapes provably hold the same number of elements.
pub fn same_count(a: &[Dim], b: &[Dim]) -> bool {
    product(a) == product(b)
}

/// NumPy broadcasting of two symbolic shapes: trailing dimensions align and a dimension of
/// literal size 1 stretches. Two different symbols do not broadcast (they could only if one
/// were 1 at run time, which a kernel signature states with a literal `1`). On failure,
/// returns the two dimensions that clash.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, (Dim, Dim)> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + a.len()).checked_sub(r).map(|j| &a[j]);
        let db = (i + b.len()).checked_sub(r).map(|j| &b[j]);
        out.push(match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if same_dim(x, y) => x.clone(),
            (Some(x), Some(y)) if x.is_one() => y.clone(),
            (Some(x), Some(y)) if y.is_one() => x.clone(),
            (Some(x), Some(y)) => return Err((x.clone(), y.clone())),
            (None, None) => Dim::Lit(1),
        });
    }
    Ok(out)
}

/// `shape` (right-aligned into `domain`) stretches along domain axis `k`: it lacks the axis or
/// has a literal 1 there while the domain does not.
pub fn is_broadcast(shape: &[Dim], domain: &[Dim], k: usize) -> bool {
    match (k + shape.len()).checked_sub(domain.len()) {
        None => true,
        Some(j) => shape[j].is_one(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(n: &str) -> Dim {
        Dim::Sym(n.into())
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let nd = vec![s("N"), s("D")];
        assert_eq!(broadcast(&nd, &[s("D")]).unwrap(), nd);
        assert_eq!(broadcast(&nd, &[s("N"), Dim::Lit(1)]).unwrap(), nd);
        assert_eq!(broadcast(&[], &nd).unwrap(), nd);
        assert_eq!(broadcast(&nd, &[s("M")]).unwrap_err(), (s("D"), s("M")));
        assert!(broadcast(&[Dim::Lit(3)], &[Dim::Lit(4)]).is_err());
    }

    #[test]
    fn products_cancel() {
        let dh = Dim::Expr(Box::new(s("D")), '/', Box::new(s("H")));
        assert!(same_count(&[s("T"), s("D")], &[s("T"), s("H"), dh.clone()]));
        assert!(!same_count(&[s("T"), s("D")], &[s("T"), dh]));
        assert!(same_count(
            &[Dim::Lit(6), s("N")],
            &[Dim::Lit(2), s("N"), Dim::Lit(3)]
        ));
        let two_n = Dim::Expr(Box::new(Dim::Lit(2)), '*', Box::new(s("N")));
        assert!(same_dim(
            &two_n,
            &Dim::Expr(Box::new(s("N")), '*', Box::new(Dim::Lit(2)))
        ));
    }
}
