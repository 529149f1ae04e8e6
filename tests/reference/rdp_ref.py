"""Independent reference for the RDP accountant (src/privacy/rdp.cpp): A_alpha of the sampled
Gaussian mechanism by direct numerical integration of its definition (Mironov, Talwar, Zhang
2019, Section 3.3), in 40-digit arithmetic with mpmath, instead of the series the C++ code sums:

  A_alpha = E_{z ~ N(0, sigma^2)} [((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha]
  RDP(alpha) = log(A_alpha) / (alpha - 1)

usage: rdp_ref.py CASES.json  ->  prints a JSON list of RDP values, one per [q, sigma, alpha]."""
import json
import sys

import mpmath

mpmath.mp.dps = 40


def rdp(q, sigma, alpha):
    q, sigma, alpha = mpmath.mpf(q), mpmath.mpf(sigma), mpmath.mpf(alpha)

    def integrand(z):
        ratio = (1 - q) + q * mpmath.exp((2 * z - 1) / (2 * sigma**2))
        return mpmath.npdf(z, 0, sigma) * ratio**alpha

    # Break points where the integrand changes shape: the bulk of N(0, sigma^2), the crossing
    # z0 where the two mixture components are equal, and the far peak near alpha.
    z0 = sigma**2 * mpmath.log(1 / q - 1) + mpmath.mpf(0.5)
    points = sorted({mpmath.mpf(0), mpmath.mpf(0.5), mpmath.mpf(1), z0, alpha, -8 * sigma, 8 * sigma,
                     alpha + 8 * sigma})
    a = mpmath.quad(integrand, [-mpmath.inf] + points + [mpmath.inf], maxdegree=10)
    return float(mpmath.log(a) / (alpha - 1))


cases = json.load(open(sys.argv[1]))
print(json.dumps([rdp(*case) for case in cases]))
