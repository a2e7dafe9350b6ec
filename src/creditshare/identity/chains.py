"""Regional credit chains and the administrative divisions that belong to them.

A chain is a regional credit-information platform; an enterprise's *home* chain is
decided by where it was registered, i.e. by the first two digits (the province) of
the administrative-division code inside its USCC. Keeping that mapping here, with
no dependency on the USCC parser, lets routing code and the synthetic generator
agree on it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DIVISIONS",
    "PROVINCE_NAMES",
    "Chain",
    "Division",
    "chain_for_province",
]


class Chain(StrEnum):
    """The three regional chains that take part in sharing.

    A ``StrEnum`` (so still a ``str`` and an ``Enum``) because the values double as
    directory names, URL segments and wire identifiers; ``str(Chain.YRD)`` is
    ``"yrd"``, never ``"Chain.YRD"``.
    """

    YRD = "yrd"
    PRD = "prd"
    BTH = "bth"

    @property
    def display_name(self) -> str:
        """Human-readable name for logs and UIs."""
        return _TITLES[self]

    @property
    def provinces(self) -> tuple[str, ...]:
        """Two-digit GB/T 2260 province codes whose registrations this chain holds."""
        return _PROVINCES[self]


_TITLES: dict[Chain, str] = {
    Chain.YRD: "Yangtze River Delta",
    Chain.PRD: "Pearl River Delta",
    Chain.BTH: "Beijing–Tianjin–Hebei",
}

_PROVINCES: dict[Chain, tuple[str, ...]] = {
    Chain.YRD: ("31", "32", "33", "34"),
    Chain.PRD: ("44",),
    Chain.BTH: ("11", "12", "13"),
}

_CHAIN_OF_PROVINCE: dict[str, Chain] = {
    province: chain for chain, provinces in _PROVINCES.items() for province in provinces
}

# All provincial-level codes of GB/T 2260, not just the chains' ones, so that an
# error about an out-of-network code can still name the province it points at.
PROVINCE_NAMES: dict[str, str] = {
    "11": "Beijing",
    "12": "Tianjin",
    "13": "Hebei",
    "14": "Shanxi",
    "15": "Inner Mongolia",
    "21": "Liaoning",
    "22": "Jilin",
    "23": "Heilongjiang",
    "31": "Shanghai",
    "32": "Jiangsu",
    "33": "Zhejiang",
    "34": "Anhui",
    "35": "Fujian",
    "36": "Jiangxi",
    "37": "Shandong",
    "41": "Henan",
    "42": "Hubei",
    "43": "Hunan",
    "44": "Guangdong",
    "45": "Guangxi",
    "46": "Hainan",
    "50": "Chongqing",
    "51": "Sichuan",
    "52": "Guizhou",
    "53": "Yunnan",
    "54": "Tibet",
    "61": "Shaanxi",
    "62": "Gansu",
    "63": "Qinghai",
    "64": "Ningxia",
    "65": "Xinjiang",
    "71": "Taiwan",
    "81": "Hong Kong",
    "82": "Macao",
}


def chain_for_province(code: str) -> Chain | None:
    """Return the chain holding registrations of a two-digit province code.

    ``None`` rather than an exception: callers differ in whether an out-of-network
    province is an input error (USCC parsing) or simply "no node to ask" (routing).
    """
    return _CHAIN_OF_PROVINCE.get(code)


@dataclass(frozen=True)
class Division:
    """A real GB/T 2260 division code, used to make synthetic data look registered.

    ``city_zh`` is the place name an enterprise registered there would carry at the
    front of its name (municipalities use the city, not the district).
    """

    code: str
    name: str
    city_zh: str

    @property
    def province_code(self) -> str:
        """First two digits: the key into ``PROVINCE_NAMES`` and the chain table."""
        return self.code[:2]


def _divisions(*rows: tuple[str, str, str]) -> tuple[Division, ...]:
    return tuple(Division(code, name, city) for code, name, city in rows)


# A handful of real county- or prefecture-level codes per province. Not exhaustive:
# the generator only needs enough variety for realistic-looking codes.
DIVISIONS: dict[str, tuple[Division, ...]] = {
    "31": _divisions(
        ("310101", "Huangpu, Shanghai", "上海"),
        ("310104", "Xuhui, Shanghai", "上海"),
        ("310105", "Changning, Shanghai", "上海"),
        ("310112", "Minhang, Shanghai", "上海"),
        ("310113", "Baoshan, Shanghai", "上海"),
        ("310115", "Pudong New Area, Shanghai", "上海"),
    ),
    "32": _divisions(
        ("320100", "Nanjing", "南京"),
        ("320200", "Wuxi", "无锡"),
        ("320400", "Changzhou", "常州"),
        ("320500", "Suzhou", "苏州"),
        ("320600", "Nantong", "南通"),
        ("321000", "Yangzhou", "扬州"),
    ),
    "33": _divisions(
        ("330100", "Hangzhou", "杭州"),
        ("330200", "Ningbo", "宁波"),
        ("330300", "Wenzhou", "温州"),
        ("330400", "Jiaxing", "嘉兴"),
        ("330600", "Shaoxing", "绍兴"),
        ("330700", "Jinhua", "金华"),
    ),
    "34": _divisions(
        ("340100", "Hefei", "合肥"),
        ("340200", "Wuhu", "芜湖"),
        ("340300", "Bengbu", "蚌埠"),
        ("340500", "Ma'anshan", "马鞍山"),
        ("341100", "Chuzhou", "滁州"),
    ),
    "44": _divisions(
        ("440100", "Guangzhou", "广州"),
        ("440300", "Shenzhen", "深圳"),
        ("440400", "Zhuhai", "珠海"),
        ("440600", "Foshan", "佛山"),
        ("441900", "Dongguan", "东莞"),
        ("442000", "Zhongshan", "中山"),
    ),
    "11": _divisions(
        ("110101", "Dongcheng, Beijing", "北京"),
        ("110102", "Xicheng, Beijing", "北京"),
        ("110105", "Chaoyang, Beijing", "北京"),
        ("110106", "Fengtai, Beijing", "北京"),
        ("110108", "Haidian, Beijing", "北京"),
        ("110115", "Daxing, Beijing", "北京"),
    ),
    "12": _divisions(
        ("120101", "Heping, Tianjin", "天津"),
        ("120103", "Hexi, Tianjin", "天津"),
        ("120104", "Nankai, Tianjin", "天津"),
        ("120113", "Beichen, Tianjin", "天津"),
        ("120116", "Binhai New Area, Tianjin", "天津"),
    ),
    "13": _divisions(
        ("130100", "Shijiazhuang", "石家庄"),
        ("130200", "Tangshan", "唐山"),
        ("130400", "Handan", "邯郸"),
        ("130600", "Baoding", "保定"),
        ("131000", "Langfang", "廊坊"),
    ),
}
