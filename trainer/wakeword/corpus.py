"""Everyday words per language, for general negative speech (random sentences read by TTS).

Random word sequences are not grammatical, but the acoustic point of general negatives is many
ordinary syllables in many voices; they are cheap to make in any quantity.
"""

from __future__ import annotations

import numpy as np

WORDS: dict[str, str] = {
    "en": """
the a and to of in is it you that he was for on are with as his they be at one have this from or
had by hot word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water than
call first who may down side been now find any new work part take get place made live where after back
little only round man year came show every good me give our under name very through just form sentence
great think say help low line differ turn cause much mean before move right boy old too same tell does
set three want air well also play small end put home read hand port large spell add even land here must
big high such follow act why ask men change went light kind off need house picture try us again animal
point mother world near build self earth father head stand own page should country found answer school
grow study still learn plant cover food sun four between state keep eye never last let thought city
tree cross farm hard start might story saw far sea draw left late run while press close night real life
few north open seem together next white children begin got walk example ease paper group always music
those both mark often letter until mile river car feet care second book carry took science eat room
friend began idea fish mountain stop once base hear horse cut sure watch color face wood main enough
plain girl usual young ready above ever red list though feel talk bird soon body dog family direct pose
leave song measure door product black short numeral class wind question happen complete ship area half
rock order fire south problem piece told knew pass since top whole king space heard best hour better
true during hundred five remember step early hold west ground interest reach fast verb sing listen six
table travel less morning ten simple several vowel toward war lay against pattern slow center love
person money serve appear road map rain rule govern pull cold notice voice unit power town fine certain
fly fall lead cry dark machine note wait plan figure star box noun field rest correct able pound done
beauty drive stood contain front teach week final gave green oh quick develop ocean warm free minute
strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel full
force blue object decide surface deep moon island foot system busy test record boat common gold
""",
    "es": """
el la de que y a en un ser se no haber por con su para como estar tener le lo todo pero más hacer o
poder decir este ir otro ese si me ya ver porque dar cuando él muy sin vez mucho saber qué sobre mi
alguno mismo yo también hasta año dos querer entre así primero desde grande eso ni nos llegar pasar
tiempo ella sí día uno bien poco deber entonces poner cosa tanto hombre parecer nuestro tan donde
ahora parte después vida quedar siempre creer hablar llevar dejar nada cada seguir menos nuevo
encontrar algo solo decir mundo país último casa venir pensar salir volver tomar conocer vivir
sentir tratar mirar contar empezar esperar buscar existir entrar trabajar escribir perder producir
ocurrir entender pedir recibir recordar terminar permitir aparecer conseguir comenzar servir sacar
necesitar mantener resultar leer caer cambiar presentar crear abrir considerar oír acabar convertir
ganar formar traer partir morir aceptar realizar suponer comprender lograr explicar agua noche mujer
ciudad momento forma lugar caso gente mano ojo trabajo punto hora calle puerta mesa libro coche
perro gato sol luna mar río montaña árbol flor camino escuela amigo hermano madre padre hijo niño
comida pan leche café fruta verde rojo azul blanco negro pequeño alto bajo largo corto rápido lento
fácil difícil bueno malo nuevo viejo joven feliz triste caliente frío lunes martes mañana tarde
semana mes música película ventana cocina jardín tienda mercado dinero precio trabajo viaje tren
avión barco playa campo pueblo historia pregunta respuesta palabra idioma nombre número color
""",
}


def words(lang: str, exclude: set[str] | None = None) -> list[str]:
    """The word list of `lang`, without the words in `exclude` (the wake phrase's own words)."""
    exclude = {w.lower() for w in (exclude or set())}
    return [w for w in dict.fromkeys(WORDS[lang].split()) if w.lower() not in exclude]


def sentences(lang: str, n: int, rng: np.random.Generator, exclude: set[str] | None = None,
              length: tuple[int, int] = (5, 14)) -> list[str]:
    """`n` random sentences of everyday words."""
    vocab = words(lang, exclude)
    return [" ".join(vocab[int(i)] for i in rng.integers(len(vocab), size=int(rng.integers(*length))))
            for _ in range(n)]
